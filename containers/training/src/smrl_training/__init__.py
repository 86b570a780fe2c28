"""The SageMaker training contract inside our images: `train` reads /opt/ml, runs the user's entry point."""
