"""timm_gated_ssl: co-trained dense and gated encoders for timm.

One encoder, pretrained with self-supervision in two modes at once: a dense mode and a gated mode in
which tiny per-block gates switch channels off per input (Krishna et al., BMVC 2023,
arXiv:2301.09164). Importing the package registers the gated models in timm's registry.
"""

__version__ = "0.1.0"
