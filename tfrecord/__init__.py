"""The data contract between the producer (`beam_jobs/`), the trainer (`trainer/`) and the tools (`launch/`).

What a dataset is: the spec (`spec`), the Example schema with its encoder and pure-Python decoder
(`schema`), TFRecord framing and RecordIO (`framing`, `recordio`), dataset.json (`manifest`), storage on
local disk or S3 (`storage`; local files written whole, outside names kept inside, locks: `localfs`) and the contact-sheet painter shared by `inspect` (launch/inspect_dataset.py)
and `evaluate` (`contact_sheet`). How the training side reads it: the readers for files and SageMaker Pipe mode
(`files`, `pipe`, `batching`, `channels`), the container's paths (`sagemaker`), the one-line error policy
every command follows (`errors`) and the library start-up lines kept off stderr (`quiet`).

`tfrecord/` and `trainer/` are what ships into the SageMaker training container (launch/source.py):
they need TensorFlow and google-crc32c only; boto3 and Pillow are imported where a function needs them.
"""
