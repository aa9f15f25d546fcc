"""`python -m launch.train` == `captcha-pipeline launch train`: a SageMaker training job."""
import sys

from launch.sagemaker_job import main

if __name__ == "__main__":
    sys.exit(main())
