"""Data sets (digits, MNIST, Fashion-MNIST, N-MNIST) and input encodings."""
from .datasets import DATASETS, Dataset, Split, dataset_names, load_dataset, normalizes
from .encode import ENCODINGS, encode, encoding_names
from .nmnist import bin_events, read_events
from .norm import InputNorm

__all__ = ["DATASETS", "ENCODINGS", "Dataset", "InputNorm", "Split", "bin_events", "dataset_names", "encode",
           "encoding_names", "load_dataset", "normalizes", "read_events"]
