"""Stand-in models that propose prompts or labels for SAM (one file per model).

The papers use large task models (Tile2Net, DPT, YOLO-NAS, LQVG); the book trains or loads small ones:
``unet`` (GeoSAM's CNN), ``detector`` (COCO SSD-MobileNetV2 and a small box detector), ``semantic``
(a DPT-style head), ``grounding`` (text -> box). Import the submodule you need; nothing is imported here.
"""
