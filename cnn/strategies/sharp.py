"""sharpDARTS (Hundt, Jain and Hager, 2019): its op family (SharpSepConv), the ``scalar`` or
``max_w`` weighting, the cosine power annealing schedule with warmup, and the multi-channel grid
search (``--multi_channel``, cnn/multichannel.py)."""
from strategies import STRATEGIES
from strategies.base import DARTS_DEFAULTS, CellStrategy


@STRATEGIES.register
class Sharp(CellStrategy):
    name = "sharp"
    DEFAULTS = {**DARTS_DEFAULTS, "weighting_algorithm": "scalar", "primitives": "PRIMITIVES", "ops": "sharp",
                "learning_rate_min": 1e-4, "lr_schedule": "cosine_power", "warmup_epochs": 5}
    SOURCE = "ahundt/sharpDARTS cnn/train_search.py"
    SUMMARY = "sharpDARTS ops, scalar or max_w weighting, cosine power annealing; --multi_channel grid"
    HINT_FLAGS = ("--weighting_algorithm", "--layers_of_cells", "--layers_in_cells", "--mid_channels",
                  "--lr_power_annealing_exponent_order", "--multi_channel")
    supports_multi_channel = True
    VARIANTS = {
        "sharp_scalar": ("--weighting_algorithm", "scalar", "--primitives", "DARTS_PRIMITIVES"),
        "sharp_max_w": ("--weighting_algorithm", "max_w", "--primitives", "DARTS_PRIMITIVES"),
        "sharp_multi_channel": ("--weighting_algorithm", "max_w", "--multi_channel"),
    }
