"""D-DARTS (Heuillet, Tabia and Hamam, 2021): one set of architecture weights per cell, sigmoid
weighting, each set with its own Adam group and cosine schedule, the separation and ablation
losses (cnn/ddarts_losses.py) and the threshold parse."""
from strategies import STRATEGIES
from strategies.base import DARTS_DEFAULTS, CellStrategy

DDARTS_DEFAULTS = {**DARTS_DEFAULTS, "weighting_algorithm": "sigmoid", "primitives": "DDARTS_7", "layout": "per_cell",
                   "alphas_init": "zeros", "batch_size": 72, "init_channels": 32, "learning_rate": 0.005,
                   "arch_learning_rate": 3e-3, "arch_betas": (0.9, 0.999), "sep_loss": "l2", "aux_loss_weight": 9.0,
                   "cell_loss": "ablation_loss", "abl_loss_weight": 0.7, "parse_method": "threshold_sparse"}


@STRATEGIES.register
class DDarts(CellStrategy):
    name = "ddarts"
    DEFAULTS = DDARTS_DEFAULTS
    SOURCE = "aheuillet/D-DARTS train_search.py"
    SUMMARY = "one weight set per cell, sigmoid, separation and ablation losses, threshold parse"
    HINT_FLAGS = ("--pretrain_epochs", "--no_arch_metric", "--sep_loss", "--aux_loss_weight", "--cell_loss",
                  "--abl_loss_weight")
    VARIANTS = {"ddarts_nested": ()}
