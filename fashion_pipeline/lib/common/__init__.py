"""Helpers every stage uses: atomic writes, data paths, the image loader, categories, framework imports, previews."""
