"""Evaluation: numbers about samples and models (toy mode weights and MMD now; image-quality metrics next).

Pure of the command line and of training: functions take tensors, arrays or data sets and return numbers; runners/
decide what to evaluate and where to write it.
"""
