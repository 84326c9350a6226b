"""The deepfashion2 stage: DeepFashion2 annotations read into one table, the crop dataset and the YOLO dataset."""
