"""dogbreed: train an image classifier and serve it on SageMaker, EC2 or a laptop."""

__version__ = "0.1.0"
