"""The ML core: pure torch/transformers functions, no Celery, database or Gradio imports."""
