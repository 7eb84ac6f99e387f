import copy

import pytest
import torch
import torch.nn.functional as F

from checkpoint import CheckpointError, load_weights
from genotypes import list_genotypes, load_architecture, parse_genotype, to_architecture
from metrics import count_macs, count_parameters
from model import ModelError, ModelSpec, NetworkCIFAR, NetworkImageNet, ddarts_state_dict, drop_path, layer_plan
from shipped_genotypes import SHIPPED


def cifar(name, C=36, layers=20, ops=None, mid=32, classes=10, aux=True):
    arch = load_architecture(name)
    return NetworkCIFAR(C, classes, layers, aux, arch, family=ops or arch.ops, mid_channels=mid)


# ../shared/reference/README.md: DARTS evaluation networks (auxiliary head built, not counted)
@pytest.mark.parametrize("name,cifar_params,imagenet_params", [
    ("DARTS_V1", 3_169_414, 4_510_432),
    ("DARTS_V2", 3_349_342, 4_718_752),
    ("NASNet", 3_830_950, 5_564_320),
    ("AmoebaNet", 3_145_078, 4_627_360),
])
def test_darts_parameter_counts_match_the_published_networks(name, cifar_params, imagenet_params):
    assert count_parameters(cifar(name)) == cifar_params
    arch = load_architecture(name)
    assert count_parameters(NetworkImageNet(48, 1000, 14, True, arch)) == imagenet_params


@pytest.mark.parametrize("name,cifar_params,imagenet_params", [
    ("SHARPSEPCONV_DARTS", 3_555_622, 4_973_728),
    ("SHARP_DARTS", 1_974_934, 3_714_880),
])
def test_sharpdarts_parameter_counts_use_the_sharp_op_family(name, cifar_params, imagenet_params):
    arch = load_architecture(name)
    assert arch.ops == "sharp"
    assert count_parameters(cifar(name, ops="sharp", mid=32)) == cifar_params
    assert count_parameters(NetworkImageNet(48, 1000, 14, True, arch, family="sharp", mid_channels=96)) == imagenet_params


def imagenet_auxiliary_head_params(C_in, classes, norm_after_conv):
    """ReLU, 5x5 pool, 1x1 conv to 128, BN(128), ReLU, 2x2 conv to 768, [BN(768)], ReLU, linear."""
    return C_in * 128 + 2 * 128 + 128 * 768 * 2 * 2 + (2 * 768 if norm_after_conv else 0) + 768 * classes + classes


# Totals with the auxiliary head, printed by sharpDARTS's own NetworkImageNet (C=48, 14 layers,
# 1000 classes, its OPS, C_mid=96); its head keeps the BatchNorm2d(768) that DARTS's omits.
@pytest.mark.parametrize("name,without_aux,sharpdarts_total", [
    ("SHARPSEPCONV_DARTS", 4_973_728, 6_236_040),
    ("SHARP_DARTS", 3_714_880, 4_977_192),
])
def test_sharpdarts_imagenet_auxiliary_head_has_its_norm(name, without_aux, sharpdarts_total):
    model = NetworkImageNet(48, 1000, 14, True, load_architecture(name), family="sharp", mid_channels=96)
    assert count_parameters(model) == without_aux
    total = sum(p.numel() for p in model.parameters())
    assert total == without_aux + imagenet_auxiliary_head_params(4 * 192, 1000, norm_after_conv=True)
    assert total == sharpdarts_total
    assert sorted(k for k in model.state_dict() if k.startswith("auxiliary_head.")) == sorted(
        ["auxiliary_head.features.2.weight", "auxiliary_head.features.5.weight",
         "auxiliary_head.classifier.weight", "auxiliary_head.classifier.bias"]
        + [f"auxiliary_head.features.{i}.{stat}" for i in (3, 6)
           for stat in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")])
    without_head = NetworkImageNet(48, 1000, 14, False, load_architecture(name), family="sharp", mid_channels=96)
    assert sum(p.numel() for p in without_head.parameters()) == without_aux


def test_darts_imagenet_auxiliary_head_keeps_darts_layout():
    model = NetworkImageNet(48, 1000, 14, True, load_architecture("DARTS_V2"))
    assert sum(p.numel() for p in model.parameters()) == 4_718_752 + imagenet_auxiliary_head_params(
        4 * 192, 1000, norm_after_conv=False) == 5_979_528
    assert "auxiliary_head.features.6.weight" not in model.state_dict()


# D-DARTS facts from running its code: (file, C, layers, params without / with the auxiliary head)
@pytest.mark.parametrize("name,C,layers,without_aux,with_aux", [
    ("D-DARTS_threshold_sparse_cifar10_0.85_50", 36, 8, 1_244_242, 1_720_668),
    ("D-DARTS_threshold_sparse_cifar10_0.85_50", 16, 8, 286_762, 722_228),
    ("D-DARTS_threshold_edge_cifar10_0.85_50", 36, 8, 2_520_298, 2_996_724),
    ("ResNet18_cifar10_threshold_sparse_0.85", 36, 4, 11_513_422, 12_063_576),
])
def test_ddarts_nested_parameter_counts(name, C, layers, without_aux, with_aux):
    model = cifar(name, C=C, layers=layers)
    assert count_parameters(model) == without_aux
    assert sum(p.numel() for p in model.parameters()) == with_aux


def test_macs_match_the_papers():
    assert count_macs(cifar("DARTS_V2"), 32) / 1e6 == pytest.approx(528, rel=0.01)
    assert count_macs(cifar("PDARTS"), 32) / 1e6 == pytest.approx(532, rel=0.01)
    assert count_macs(cifar("GDAS_V1"), 32) / 1e6 == pytest.approx(519, rel=0.01)


def test_fairdarts_count_matches_the_paper_which_includes_its_auxiliary_head():
    model = cifar("FairDARTS_a")
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(2.83, rel=0.02)


def test_state_dict_names_are_those_of_the_darts_networks():
    names = set(cifar("DARTS_V2").state_dict())
    for key in ["stem.0.weight", "stem.1.running_mean", "cells.0.preprocess0.op.1.weight",
                "cells.0._ops.0.op.1.weight", "cells.0._ops.0.op.7.running_var",
                "cells.7.preprocess0.conv_1.weight", "cells.6.preprocess1.op.1.weight",
                "cells.19._ops.7.op.3.weight", "auxiliary_head.features.5.weight",
                "auxiliary_head.classifier.bias", "classifier.weight"]:
        assert key in names, key
    imagenet = set(NetworkImageNet(48, 1000, 14, True, load_architecture("DARTS_V2")).state_dict())
    assert {"stem0.3.weight", "stem1.1.weight", "auxiliary_head.features.5.weight",
            "cells.0.preprocess0.conv_1.weight"} <= imagenet
    assert "auxiliary_head.features.6.weight" not in imagenet  # DARTS omits that norm


def test_a_pytorch_0_3_state_dict_without_bn_counters_loads_strictly():
    model = cifar("DARTS_V2", C=8, layers=5)
    old = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    fresh = cifar("DARTS_V2", C=8, layers=5)
    load_weights(fresh, old, "old.pt")
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in old.items())
    with pytest.raises(CheckpointError, match="another architecture"):
        load_weights(cifar("DARTS_V1", C=8, layers=5), old, "old.pt")


@pytest.mark.parametrize("size,aux", [(32, True), (30, True), (16, False), (15, False)])
def test_forward_shapes_and_auxiliary_logits(size, aux):
    model = cifar("DARTS_V2", C=8, layers=5, classes=7, aux=aux)
    model.drop_path_prob = 0.2
    logits, logits_aux = model(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 7)
    assert logits_aux.shape == (2, 7) if aux else logits_aux is None
    model.eval()
    assert model(torch.randn(2, 3, size, size))[1] is None


def test_auxiliary_head_on_too_small_inputs_is_refused_in_one_sentence():
    spec = ModelSpec.resolve("DARTS_V2", "cifar", 10, auxiliary=True)
    spec.check_input_size(32)
    with pytest.raises(ModelError, match="drop --auxiliary"):
        spec.check_input_size(16)


def test_imagenet_network_forward():
    arch = load_architecture("DARTS_V2")
    model = NetworkImageNet(8, 5, 3, False, arch).eval()
    assert model(torch.randn(1, 3, 224, 224))[0].shape == (1, 5)


def test_drop_path_is_random_in_training_and_off_in_eval():
    model = cifar("DARTS_V2", C=8, layers=3, aux=False)
    model.drop_path_prob = 0.5
    x = torch.randn(4, 3, 16, 16)
    model.train()
    torch.manual_seed(0)
    a = model(x)[0]
    b = model(x)[0]
    assert not torch.allclose(a, b)
    model.eval()
    assert torch.equal(model(x)[0], model(x)[0])


def test_drop_path_zeroes_whole_samples_and_rescales_the_rest():
    torch.manual_seed(0)
    x = torch.ones(4000, 2, 3, 3, requires_grad=True)
    y = drop_path(x, 0.25)
    per_sample = y.detach().flatten(1)
    assert torch.equal(per_sample.amin(1), per_sample.amax(1))          # one factor per sample
    kept = per_sample[:, 0] > 0
    assert torch.allclose(per_sample[kept], torch.full_like(per_sample[kept], 1 / 0.75))
    assert abs(1 - kept.float().mean().item() - 0.25) < 0.03
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())                               # d(x * factor)/dx = factor


def test_a_concatenated_node_without_usable_input_contributes_zeros():
    # node 3 is listed first, but its only source (node 2) is computed after it: it gets no input
    text = ("Genotype_nested(genes=[[('sep_conv_3x3', 3, 2), ('sep_conv_3x3', 2, 0)]], "
            "concat=range(2, 4), reductions=[])")
    arch = to_architecture(parse_genotype(text), "late_source")
    cell = NetworkCIFAR(8, 10, 1, False, arch).eval().cells[0]
    assert cell._plan == [(2, [1])] and cell._concat == [3, 2]
    s = torch.randn(1, 24, 8, 8)
    out = cell(s, s)
    assert out.shape == (1, 16, 8, 8)
    assert torch.count_nonzero(out[:, :8]) == 0 and torch.count_nonzero(out[:, 8:]) > 0


def test_nested_cells_skip_edges_from_uncomputed_nodes_and_concat_by_first_appearance():
    text = ("Genotype_nested(genes=[[('simple_conv_1x1', 4, 0), ('sep_conv_3x3', 2, 0), "
            "('sep_conv_3x3', 3, 2), ('max_pool_3x3', 4, 3)]], concat=range(2, 6), reductions=[])")
    arch = to_architecture(parse_genotype(text), "xception_like")
    model = NetworkCIFAR(8, 10, 1, False, arch).eval()
    cell = model.cells[0]
    assert cell._plan == [(4, [0]), (2, [1]), (3, [2])]
    assert cell._concat == [4, 2, 3]
    s = torch.randn(1, 24, 8, 8)
    s0 = cell.preprocess0(s)
    assert torch.allclose(cell(s, s)[:, :8], cell._ops[0](s0))


def test_automatic_derivation_maps_layers_like_ddarts():
    arch = load_architecture("D-DARTS_threshold_sparse_cifar10_0.85_50")
    plan = layer_plan(arch, 20)
    assert plan.reductions == (6, 13)
    assert plan.genes == (0, 0, 0, 1, 1, 1, 2, 4, 3, 4, 3, 4, 3, 5, 6, 7, 6, 7, 6, 7)
    assert layer_plan(arch, None).reductions == (2, 6)
    with pytest.raises(ModelError, match="--layers must be 8 or more"):
        layer_plan(arch, 6)
    with pytest.raises(ModelError, match="3 reduction cells"):
        layer_plan(load_architecture("ResNet18"), 10)


def test_ddarts_checkpoint_keys_map_onto_ours():
    model = cifar("D-DARTS_threshold_edge_cifar10_0.85_50", C=8, layers=8)
    arch = load_architecture("D-DARTS_threshold_edge_cifar10_0.85_50")
    ddarts = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if parts[0] == "cells" and parts[2] == "_ops":
            i, k = int(parts[1]), int(parts[3])
            edges = arch.cells[arch.layer_genes[i]].edges
            e = edges[k]
            j = sum(1 for f in edges[:k] if (f.to_node, f.from_node) == (e.to_node, e.from_node))
            key = ".".join(["cells", parts[1], "_ops", str(e.to_node), str(e.from_node), str(j)] + parts[4:])
        ddarts[key] = value
    fresh = cifar("D-DARTS_threshold_edge_cifar10_0.85_50", C=8, layers=8)
    load_weights(fresh, ddarts_state_dict(ddarts, fresh), "ddarts.pt")
    loaded = fresh.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_model_spec_defaults_follow_the_stem_and_genotype():
    spec = ModelSpec.resolve("DARTS_V2", "cifar", 10)
    assert (spec.init_channels, spec.layers, spec.ops, spec.mid_channels) == (36, 20, "darts", 32)
    spec = ModelSpec.resolve("SHARP_DARTS", "imagenet", 1000)
    assert (spec.init_channels, spec.layers, spec.ops, spec.mid_channels) == (48, 14, "sharp", 96)
    spec = ModelSpec.resolve("D-DARTS_threshold_sparse_cifar10_0.85_50", "cifar", 10)
    assert spec.layers is None and len(spec.build().cells) == 8


# Every shipped genotype at the DARTS CIFAR size (C=36; 20 cells, or a per-cell genotype's own
# count; its published op family, mid 32; no auxiliary head). Rows with published figures are
# checked against them above; the others pin today's numbers so a change to a shared piece shows.
SHIPPED_PARAMS = {
    "AmoebaNet": 3145078,
    "D-DARTS_threshold_edge_abl0.5_fair7_cifar100_0.85_50": 2905030,
    "D-DARTS_threshold_edge_cifar10_0.85_50": 2520298,
    "D-DARTS_threshold_sparse_abl0.5_fair7_cifar100_0.85_50": 1306990,
    "D-DARTS_threshold_sparse_cifar10_0.85_50": 1244242,
    "DARTS": 3349342,
    "DARTS_MINUS_cifar10_s0_0": 3454318,
    "DARTS_V1": 3169414,
    "DARTS_V2": 3349342,
    "DrNAS_cifar10": 4099294,
    "DrNAS_imagenet": 4048750,
    "ENASNet": 4020166,
    "FairDARTS_a": 2360782,
    "FairDARTS_b": 3407878,
    "FairDARTS_c": 2598814,
    "FairDARTS_d": 3365542,
    "FairDARTS_e": 2643742,
    "FairDARTS_f": 3151054,
    "FairDARTS_g": 2899054,
    "GDAS_V1": 3368782,
    "MdeNAS": 3783286,
    "NASNet": 3830950,
    "PC_DARTS_cifar": 3634678,
    "PC_DARTS_image": 3721510,
    "PDARTS": 3433798,
    "ResNet18": 4433734,
    "ResNet18_cifar100_threshold_edge_0.85": 38031454,
    "ResNet18_cifar100_threshold_sparse_0.85": 16277302,
    "ResNet18_cifar10_threshold_edge_0.85": 17193934,
    "ResNet18_cifar10_threshold_sparse_0.85": 11513422,
    "ResNet50": 7727374,
    "ResNet50_cifar100_threshold_edge_0.85": 52923286,
    "ResNet50_cifar100_threshold_sparse_0.85": 22244230,
    "ResNet50_cifar10_threshold_edge_0.85": 39097846,
    "ResNet50_cifar10_threshold_sparse_0.85": 22584286,
    "SDARTS_ADV": 3344806,
    "SDARTS_RS": 3606166,
    "SGAS_Cri1_CIFAR_3": 3795166,
    "SGAS_Cri2_CIFAR_3": 4094110,
    "SHARPSEPCONV_DARTS": 3555622,
    "SHARPSEPCONV_DARTS_MAX_W": 3546550,
    "SHARP_DARTS": 1974934,
    "SHARP_DARTS_MAX_W": 8306022,
    "SNAS": 2661382,
    "Xception": 5052718,
    "Xception_cifar100_threshold_sparse_0.85": 38024758,
    "Xception_cifar10_threshold_edge_0.85": 97426702,
    "Xception_cifar10_threshold_sparse_0.85": 35781814,
}
UNBUILDABLE = {"Xception_cifar100_threshold_edge_0.85"}  # gene 12 has no edge from the cell inputs


def test_every_shipped_genotype_has_a_tested_count():
    # shipped = listed in genotypes/README.md; searches may add files of their own beside them
    assert set(SHIPPED) == set(SHIPPED_PARAMS) | UNBUILDABLE
    assert set(SHIPPED) <= set(list_genotypes())


@pytest.mark.parametrize("name", sorted(SHIPPED_PARAMS))
def test_shipped_genotype_parameter_count(name):
    arch = load_architecture(name)
    with torch.device("meta"):
        model = NetworkCIFAR(36, 10, 20 if arch.shared else None, False, arch, family=arch.ops, mid_channels=32)
    assert count_parameters(model) == SHIPPED_PARAMS[name]


def test_a_genotype_with_a_cell_cut_off_from_its_inputs_is_refused_clearly():
    arch = load_architecture("Xception_cifar100_threshold_edge_0.85")
    with pytest.raises(ModelError, match="no node that can be computed from its inputs"):
        NetworkCIFAR(36, 10, None, False, arch)


def test_ddarts_genotypes_keep_the_ddarts_imagenet_layout():
    nested = NetworkImageNet(8, 5, None, True, load_architecture("ResNet18_cifar10_threshold_sparse_0.85"))
    classic = NetworkImageNet(8, 5, 14, True, load_architecture("DARTS_V2"))
    assert nested.stem0[3].stride == (1, 1) and classic.stem0[3].stride == (2, 2)
    assert "auxiliary_head.features.6.running_mean" in nested.state_dict()
    assert "auxiliary_head.features.6.running_mean" not in classic.state_dict()


def _darts_forward(model: NetworkCIFAR, x: torch.Tensor):
    """DARTS's NetworkCIFAR.forward written out plainly: every op applies its own ReLU to its input, every
    preprocessing op its own, the auxiliary head its own (in place, as DARTS's does), torch.cat joins the
    nodes."""
    s0 = s1 = model.stem(x)
    logits_aux = None
    for i, cell in enumerate(model.cells):
        states = {0: cell.preprocess0(s0), 1: cell.preprocess1(s1)}
        for node, edge_ids in cell._plan:
            out = 0
            for k in edge_ids:
                h = cell._ops[k](states[cell._sources[k]])
                if model.drop_path_prob > 0 and not cell._is_identity[k]:
                    h = drop_path(h, model.drop_path_prob)
                out = out + h
            states[node] = out
        s0, s1 = s1, torch.cat([states[j] for j in cell._concat], dim=1)
        if i == model._aux_layer:
            logits_aux = model.auxiliary_head(s1)
    return model.classifier(model.global_pooling(s1).flatten(1)), logits_aux


def _step_results(model, forward, x, y, seed):
    model.zero_grad()
    torch.manual_seed(seed)
    logits, logits_aux = forward(x)
    loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(logits_aux, y)
    loss.backward()
    return {"logits": logits.detach(), "auxiliary logits": logits_aux.detach(),
            **{f"grad {n}": p.grad for n, p in model.named_parameters()},
            **{f"buffer {n}": b.clone() for n, b in model.named_buffers()}}


@pytest.mark.parametrize("dtype,fmt,drop", [(torch.float64, torch.contiguous_format, 0.0),
                                            (torch.float64, torch.channels_last, 0.3),
                                            (torch.float32, torch.channels_last, 0.0)])
def test_shared_relus_and_concat_give_the_darts_logits_and_gradients(dtype, fmt, drop):
    # our forward applies one ReLU per state and per cell output and hands each concatenated node a dense
    # gradient; the plain DARTS computation must give the same logits, gradients and BatchNorm statistics
    torch.manual_seed(0)
    ours = cifar("DARTS_V2", C=8, layers=5).to(dtype=dtype, memory_format=fmt).train()
    plain = copy.deepcopy(ours)
    ours.drop_path_prob = plain.drop_path_prob = drop
    x = torch.randn(4, 3, 32, 32, dtype=dtype).contiguous(memory_format=fmt)
    y = torch.tensor([0, 3, 5, 9])
    got = _step_results(ours, ours, x, y, seed=1)
    want = _step_results(plain, lambda t: _darts_forward(plain, t), x, y, seed=1)
    assert got.keys() == want.keys()
    tolerance = {"rtol": 1e-9, "atol": 1e-11} if dtype == torch.float64 else {"rtol": 1e-3, "atol": 1e-5}
    for key in want:
        torch.testing.assert_close(got[key], want[key], **tolerance, msg=key)
