"""What the tourist sees: screen descriptions (model.py) rendered to Pillow images (render.py)."""
