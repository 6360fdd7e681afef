"""RenderBEGAN networks (thesis §3.3): simulator S, generator G, discriminator D, predictor P."""

from models.networks.config import NetConfig
from models.networks.discriminator import Discriminator
from models.networks.generator import Generator
from models.networks.predictor import ImagePredictor, Predictor
from models.networks.simulator import Simulator

__all__ = ["Discriminator", "Generator", "ImagePredictor", "NetConfig", "Predictor", "Simulator"]
