"""Labelled photos a user brings (class folders, CSV, YOLO folders) as training and evaluation inputs."""
