"""fairseq-nas: a fairseq plugin for Transformer architecture search in MT."""
from setuptools import find_packages, setup

setup(
    name="fairseq-nas",
    version="0.1.0",
    description="Heterogeneous supernet, DSS, pairwise GBDT ranking and latency-aware search for fairseq",
    packages=find_packages(include=["fairseq_nas", "fairseq_nas.*"]),
    package_data={"fairseq_nas": ["spaces/*.yaml"]},
    python_requires=">=3.9",
    install_requires=["numpy", "PyYAML", "lightgbm", "sacrebleu", "sentencepiece", "tqdm"],
    entry_points={"console_scripts": ["fairseq-nas=fairseq_nas.cli.main:main"]},
)
