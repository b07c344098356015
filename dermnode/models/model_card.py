"""Model cards: the JSON file that sits beside every weights file.

A card names the architecture, profile and version, the sha256 of the weights, the training data and
split (with the image ids of both sides, so that a validation can tell which of its cases the model
has seen), the measured metrics and the licence. The node reports name, version and hash in every result.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dermnode.contract import ModelIdentity

CARD_FILE = "model_card.json"
DATA_LICENCE = (
    "Trained on ISIC archive data (ISIC 2018/2019 challenges; HAM10000, BCN20000, MSK), licensed "
    "CC BY-NC 4.0: these weights inherit the non-commercial, attribution terms. Not for clinical use."
)
STARTER_DIR = Path(__file__).with_name("starter")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ModelCard:
    name: str
    version: str
    architecture: str
    profile: str
    weights_file: str
    weights_sha256: str = ""
    training_data: str = ""
    split: str = ""
    #: The ISIC image ids the weights were trained on ("train") and checked on ("validation").
    split_ids: dict[str, list[str]] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    licence: str = DATA_LICENCE

    @property
    def identity(self) -> ModelIdentity:
        return ModelIdentity(self.name, self.version, self.weights_sha256)

    def save(self, directory: Path) -> Path:
        """Write the card, hashing the weights file that sits in the same directory."""
        directory = Path(directory)
        self.weights_sha256 = sha256_file(directory / self.weights_file)
        path = directory / CARD_FILE
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def load(cls, directory: Path, verify: bool = True) -> ModelCard:
        """Read a card; with ``verify`` the weights file must match the recorded sha256."""
        directory = Path(directory)
        path = directory / CARD_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no {CARD_FILE} in {directory}: not a dermnode model directory")
        card = cls(**json.loads(path.read_text()))
        if verify:
            actual = sha256_file(directory / card.weights_file)
            if actual != card.weights_sha256:
                raise ValueError(
                    f"{directory / card.weights_file}: sha256 {actual} does not match the model card "
                    f"({card.weights_sha256}); refusing to load weights that are not the documented ones"
                )
        return card


def model_dir(models_dir: Path | None, name: str) -> Path:
    """The directory of model ``name`` (segmentation, classifier, bcc_sk) under a models folder,
    falling back to the starter weights shipped in the package."""
    return Path(models_dir) / name if models_dir is not None else STARTER_DIR / name
