"""The built-in domains; importing this module registers them (`get_domain` does so on first use)."""

from models.domains.digits import DigitsDomain
from models.domains.faces import FacesDomain, PhotoFolderError
from models.domains.faces_m import FacesMDomain

__all__ = ["DigitsDomain", "FacesDomain", "FacesMDomain", "PhotoFolderError"]
