"""A TFDS builder for local text files, so the TensorFlow Datasets path runs offline.

`prepare_local_text_dataset(text_path, data_dir)` turns a text file or a folder of `*.txt` files
(documents separated by blank lines) into the TFDS dataset `local_text_files` (one `train` split,
feature `text`), written as ArrayRecord. It is then read like any prepared TFDS dataset:
`load_documents("tfds", tfds_name="local_text_files", data_dir=data_dir)`.
The files are given through TFDS's standard `manual_dir`, so nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import tensorflow_datasets as tfds

from lm_jax.data.files import text_files
from lm_jax.errors import DataError

NAME = "local_text_files"


class LocalTextFiles(tfds.core.GeneratorBasedBuilder):
    """Documents from local text files (`manual_dir`), one example per document."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass the text file or folder as download_config.manual_dir."

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            description="Documents (blank-line separated) from local UTF-8 text files.",
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(Path(dl_manager.manual_dir))}

    def _generate_examples(self, path: Path):
        for i, doc in enumerate(text_files(path)):
            yield i, {"text": doc}


def prepare_local_text_dataset(text_path: str | os.PathLike, data_dir: str | os.PathLike) -> Path:
    """Build `local_text_files` from `text_path` under `data_dir`; returns the dataset folder."""
    text_path = Path(text_path)
    if not text_path.exists():
        raise DataError(f"corpus path does not exist: {text_path}")
    builder = LocalTextFiles(data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(text_path))
    )
    return Path(builder.data_dir)
