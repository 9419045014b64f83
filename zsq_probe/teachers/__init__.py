"""Teachers: pytorchcv models and user weights (`loader`), the embedded digits teacher (`digits`) and top-1
measurement (`accuracy`)."""
