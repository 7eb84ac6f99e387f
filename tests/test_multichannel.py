"""sharpDARTS multi-channel search space: path format and files, search network, path network."""
import ast

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from architect import ArchConfig, Architect
from metrics import count_parameters
from multichannel import (CHANNELS, PATH_OPS, PATHS_DIR, ChannelPath, MultiChannelError, MultiChannelSearchNetwork,
                          PathNetwork, PathStep, list_paths, load_path, path_from_raw_weights, read_path_file,
                          write_path_file)
from paths import REPO_ROOT
from runtime import Precision

REFERENCE_FILE = REPO_ROOT.parent / "shared" / "reference" / "sharpdarts_multichannel_paths.txt"
SHIPPED = ["MULTI_CHANNEL_GREEDY_MAX_W_BOTTOM_UP", "MULTI_CHANNEL_GREEDY_MAX_W_TOP_DOWN",
           "MULTI_CHANNEL_GREEDY_SCALAR_BOTTOM_UP", "MULTI_CHANNEL_GREEDY_SCALAR_TOP_DOWN",
           "MULTI_CHANNEL_HANDMADE_PATH", "MULTI_CHANNEL_MAX_W_PATH", "MULTI_CHANNEL_RANDOM_OPTIMAL",
           "MULTI_CHANNEL_RANDOM_PATH", "MULTI_CHANNEL_SCALAR_PATH"]


pytestmark = pytest.mark.usefixtures("one_thread")


def reference() -> dict:
    """Every assignment of the published file: path lists, and the raw-weight Genotype(...) fields."""
    if not REFERENCE_FILE.is_file():
        pytest.skip("the published reference data is not in this checkout")
    out = {}
    for node in ast.parse(REFERENCE_FILE.read_text()).body:
        value = node.value
        if isinstance(value, ast.Call):
            out[node.targets[0].id] = {kw.arg: ast.literal_eval(kw.value) for kw in value.keywords}
        else:
            out[node.targets[0].id] = ast.literal_eval(value)
    return out


def handmade_names() -> list[str]:
    return load_path("MULTI_CHANNEL_HANDMADE_PATH")[1].names()


# ------------------------------------------------------------------------------ path format and files

def test_shipped_paths_parse_round_trip_and_name_their_stem_in_the_published_grid():
    assert set(SHIPPED) <= set(list_paths())      # searches may write paths of their own beside them
    for name in SHIPPED:
        file_name, path = read_path_file(PATHS_DIR / f"{name}.txt")
        assert file_name == name
        assert ChannelPath.from_names(path.names()) == path
        assert CHANNELS[path.stem_index] == path.stem_channels
        assert path.layers == 4 and all(s.op in PATH_OPS for s in path.steps)
        assert (PATHS_DIR / f"{name}.txt").read_text().startswith("# source: ahundt/sharpDARTS cnn/genotypes.py\n")


def test_shipped_paths_equal_the_published_lists():
    published = {k: v for k, v in reference().items() if isinstance(v, list)}
    assert sorted(published) == SHIPPED
    for name, names in published.items():
        assert load_path(name)[1].names() == names
        assert ChannelPath.from_names(names).names() == names


@pytest.mark.parametrize("search,path", [("MULTI_CHANNEL_MAX_W", "MULTI_CHANNEL_MAX_W_PATH"),
                                         ("MULTI_CHANNEL_SCALAR", "MULTI_CHANNEL_SCALAR_PATH")])
def test_best_path_of_the_published_raw_weights_is_the_published_path(search, path):
    raw = reference()[search]
    assert np.asarray(raw["normal"]).shape == (4, 4, 4, 2)
    assert path_from_raw_weights(raw["normal"], raw["reduce"]) == load_path(path)[1]


def test_best_path_is_exact_not_greedy_and_breaks_ties_towards_the_first_width_and_op():
    channels = (4, 8)
    normal, reduce = np.zeros((1, 2, 2, 2)), np.zeros((1, 2, 2, 2))
    normal[0, 0, 0, 1] = 0.5            # the best first stage stays at 4 channels ...
    normal[0, 1, 1, 0] = 0.4            # ... but only 8 channels lead on to the best second stage
    reduce[0, 1, 0, 1] = 1.0
    path = path_from_raw_weights(normal, reduce, channels)
    assert path == ChannelPath(8, (PathStep(0, 1, 8, 8, "SharpSepConv"), PathStep(0, 2, 8, 4, "ResizablePool")), 4,
                               stem_index=1)
    flat = path_from_raw_weights(np.zeros((2, 2, 2, 2)), np.zeros((2, 2, 2, 2)), channels)
    assert flat.stem_channels == 4 and flat.stem_index == 0
    assert all((s.c_in, s.c_out, s.op) == (4, 4, "SharpSepConv") for s in flat.steps)
    with pytest.raises(MultiChannelError, match="shape"):
        path_from_raw_weights(np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 2, 3)), channels)


@pytest.mark.parametrize("index,replacement,message", [
    (7, "layer_1_stride_1_c_in_128_c_out_64_op_type_SharpSepConv", "takes 128 channels but the step before gives 64"),
    (3, "layer_0_stride_1_c_in_32_c_out_32_op_type_AvgPool", "unknown op type 'AvgPool'"),
    (4, "layer_0_add_c_out_64_stride_1", "expected 'layer_0_add_c_out_32_stride_1'"),
    (slice(3, 7), "SWAP", "step 0 must be layer 0 with stride 1"),
    (19, "SharpSepConv128", "does not match the last step's 256 channels"),
    (2, "BatchNorm_1", "expected 'BatchNorm_0'"),
    (3, "layer_0_stride_1_c_in_032_c_out_32_op_type_SharpSepConv", "entry 3"),
])
def test_bad_paths_are_refused_with_one_sentence_naming_the_entry(index, replacement, message):
    names = handmade_names()
    if replacement == "SWAP":       # the stride-2 stage of layer 0 before its stride-1 stage
        names[index] = names[5:7] + names[3:5]
    else:
        names[index] = replacement
    with pytest.raises(MultiChannelError, match=message) as err:
        ChannelPath.from_names(names)
    assert "\n" not in str(err.value)


def test_truncated_or_extended_paths_are_refused():
    names = handmade_names()
    with pytest.raises(MultiChannelError, match="ends after entry"):
        ChannelPath.from_names(names[:-1])
    with pytest.raises(MultiChannelError, match="nothing after 'Linear'"):
        ChannelPath.from_names(names + ["Linear"])
    with pytest.raises(MultiChannelError, match="two steps per layer"):
        ChannelPath.from_names(names[:5] + ["SharpSepConv32"] + names[-3:])
    with pytest.raises(MultiChannelError, match="list of strings"):
        ChannelPath.from_names("Source")


def test_write_and_read_round_trip(tmp_path):
    _, path = load_path("MULTI_CHANNEL_RANDOM_PATH")
    target = tmp_path / "sub" / "MINE.txt"
    write_path_file(target, "MINE", path, comments=["searched here", "# second line"])
    assert read_path_file(target) == ("MINE", path)
    assert load_path(str(target)) == ("MINE", path)
    lines = target.read_text().splitlines()
    assert lines[:2] == ["# searched here", "# second line"] and lines[2].startswith("MINE = ['Source', ")
    assert [p.name for p in target.parent.iterdir()] == ["MINE.txt"]     # no temporary file left
    with pytest.raises(MultiChannelError, match="cannot name a path"):
        write_path_file(target, "not a name", path)


@pytest.mark.parametrize("text,found", [
    ("X = __import__('os').system('touch pwned')\n", "1:4: found a call"),
    ("# ok\nX = ['Source'] + ['Conv3x3_0']\n", "2:4: found a BinOp"),
    ("X = ['Source', open('pwned', 'w')]\n", "1:15: found a Call in the list"),
    ("X = ['Source']\nY = ['Source']\n", "holds 2 statements"),
    ("X = ['Source',\n", "invalid syntax"),
    ("X = ['Source', 'Conv3x3_0', 'BatchNorm_0', 'Linear']\n", "1: multi-channel path entry 3 'Linear'"),
])
def test_code_or_bad_content_in_a_path_file_is_refused_not_run(tmp_path, monkeypatch, text, found):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_text(text)
    with pytest.raises(MultiChannelError, match=found) as err:
        read_path_file(bad)
    assert str(err.value).startswith(str(bad))
    assert not (tmp_path / "pwned").exists()


def test_unknown_path_name_lists_the_known_ones():
    with pytest.raises(MultiChannelError, match="MULTI_CHANNEL_HANDMADE_PATH") as err:
        load_path("MULTI_CHANNEL_NOPE")
    assert "unknown multi-channel path 'MULTI_CHANNEL_NOPE'" in str(err.value)


# ------------------------------------------------------------------------------ path network

def test_handmade_path_network_shape_and_parameter_count():
    _, path = load_path("MULTI_CHANNEL_HANDMADE_PATH")
    net = PathNetwork(path, 10)
    logits, aux = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and aux is None
    # stem 3->32: 864 + 64; SharpSepConv(c, c) = 2 * (9c + c^2 + 2c): 2,752 / 9,600 / 35,584 / 136,704;
    # ResizablePool(c, 2c) = 2c^2 + 4c: 2,176 / 8,448 / 33,280, and 0 for 256->256; head SharpSepConv
    # 256->768 with a 768-wide middle: 2,304 + 196,608 + 1,536 + 6,912 + 589,824 + 1,536; Linear 7,690.
    assert count_parameters(net) == 1_035_882
    assert count_parameters(PathNetwork(path, 10, mid_channels=16)) < 1_035_882


# ------------------------------------------------------------------------------ search network

def tiny_search(**kw) -> MultiChannelSearchNetwork:
    torch.manual_seed(0)
    return MultiChannelSearchNetwork(10, channels=(4, 8), layers=2, head_channels=16, **kw)


def test_search_network_shapes():
    net = tiny_search()
    assert net(torch.randn(3, 3, 16, 16)).shape == (3, 10)
    assert [tuple(a.shape) for a in net.arch_parameters()] == [(2, 2, 2, 2)] * 2
    raw = net.raw_weights()
    assert sorted(raw) == ["normal", "reduce"] and all(r.shape == (2, 2, 2, 2) for r in raw.values())
    # one softmax spans a whole stage of a layer (all c_in, c_out, ops), as in sharpDARTS
    np.testing.assert_allclose(raw["normal"].reshape(2, -1).sum(axis=1), 1.0, rtol=1e-6)
    names = {n for n, _ in net.named_weight_parameters()}
    assert not any(n.startswith("alphas") for n in names)
    assert len(net.weight_parameters()) + 2 == len(list(net.parameters()))
    with pytest.raises(MultiChannelError, match="no cells to ablate"):
        net(torch.randn(1, 3, 16, 16), ablate=0)
    for bad in ({"channels": (4, 4)}, {"weighting": "hard"}, {"layers": 0}):
        with pytest.raises(MultiChannelError):
            MultiChannelSearchNetwork(10, **bad)


WANTED = ChannelPath(8, (PathStep(0, 1, 8, 4, "ResizablePool"), PathStep(0, 2, 4, 8, "SharpSepConv"),
                         PathStep(1, 1, 8, 8, "SharpSepConv"), PathStep(1, 2, 8, 4, "ResizablePool")), 4, stem_index=1)


def dominate(net: MultiChannelSearchNetwork, path: ChannelPath) -> None:
    with torch.no_grad():
        for a in net.arch_parameters():
            a.fill_(-10.0)
        for step in path.steps:
            a = net.arch_parameters()[step.stride - 1]
            a[step.layer, net.channels.index(step.c_in), net.channels.index(step.c_out), PATH_OPS.index(step.op)] = 10.0


@pytest.mark.parametrize("weighting", ["softmax", "max_w", "sigmoid"])
def test_best_path_follows_hand_set_alphas(weighting):
    net = tiny_search(weighting=weighting)
    dominate(net, WANTED)
    assert net.best_path() == WANTED


def test_search_network_with_one_dominant_path_computes_that_path_network():
    net = tiny_search().eval()
    dominate(net, WANTED)
    with torch.no_grad():
        net.classifier.bias.zero_()     # the logits are then the features alone, not mostly the bias
    path_net = PathNetwork(WANTED, 10, head_channels=16).eval()
    path_net.stem.load_state_dict(net.stem[1].state_dict())
    for op, s in zip(path_net.ops, WANTED.steps):
        op.load_state_dict(net.op_grid[s.layer][s.stride - 1][(4, 8).index(s.c_in)][(4, 8).index(s.c_out)]
                           [PATH_OPS.index(s.op)].state_dict())
    path_net.head.load_state_dict(net.base[0].state_dict())
    path_net.classifier.load_state_dict(net.classifier.state_dict())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = path_net(x)[0]
        torch.testing.assert_close(net(x), expected, atol=1e-4, rtol=1e-4)
        assert (net(x) - expected).abs().max() < 0.1 * expected.abs().max()


def test_architect_steps_change_the_alphas_and_lower_the_loss():
    net = tiny_search()
    torch.manual_seed(1)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    architect = Architect(net, ArchConfig(learning_rate=0.05), Precision(torch.device("cpu"), False))
    before = [a.detach().clone() for a in net.arch_parameters()]
    with torch.no_grad():
        loss_before = F.cross_entropy(net(x), y).item()
    for _ in range(5):
        architect.step((x, y), (x, y), torch.optim.SGD(net.weight_parameters(), lr=0.01))
    with torch.no_grad():
        loss_after = F.cross_entropy(net(x), y).item()
    assert all((a - b).abs().max() > 1e-2 for a, b in zip(net.arch_parameters(), before))
    assert loss_after < loss_before - 1e-3


def test_second_order_architect_step_runs_on_the_grid():
    net = tiny_search(weighting="max_w")
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    optimizer = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9)
    architect = Architect(net, ArchConfig(unrolled=True), Precision(torch.device("cpu"), False))
    before = [a.detach().clone() for a in net.arch_parameters()]
    stats = architect.step((x, y), (x, y), optimizer)
    assert torch.isfinite(stats["arch_loss"])
    assert all(not torch.equal(a, b) for a, b in zip(net.arch_parameters(), before))
