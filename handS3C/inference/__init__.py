"""Inference for people: crops, the batched model, the camera fit and the files ``hands3c predict`` writes."""
from .camera import fit_translation, pinhole, project
from .overlay import render_overlay, side_view
from .predict import (Prediction, collect_images, load_bboxes, load_model, parse_bbox, predict_files,
                      predict_images, prediction_record, prepare_crop, write_obj, write_prediction)

__all__ = ["fit_translation", "pinhole", "project", "render_overlay", "side_view", "Prediction", "collect_images",
           "load_bboxes", "load_model", "parse_bbox", "predict_files", "predict_images", "prediction_record",
           "prepare_crop", "write_obj", "write_prediction"]
