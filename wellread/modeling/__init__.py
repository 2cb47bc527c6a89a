"""The model: the 24 miniatures (``zoo``), building, loading strictly and saving BERT in the HF layout
(``models``), the masked-only pre-training head and its loss (``heads``), the fast CPU dropout and
training attention (``dropout``), and Google's TF checkpoints (``tfcheckpoint``, ``convert``)."""
