"""Data sets (digits, MNIST, Fashion-MNIST, N-MNIST) and input encodings."""
from .datasets import DATASETS, Dataset, Split, dataset_names, load_dataset, normalizes
from .encode import ENCODINGS, encode, encoding_names
from .nmnist import bin_events, read_events

__all__ = ["DATASETS", "ENCODINGS", "Dataset", "Split", "bin_events", "dataset_names", "encode",
           "encoding_names", "load_dataset", "normalizes", "read_events"]
