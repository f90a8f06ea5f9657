import copy

import numpy as np
import torch

import modeconn as mc

data = mc.load_dataset("digits")
arch = dict(widths=[16, 32, 64], hidden=256, pool_padding=1)  # the demo's ConvFC
nets, snapshots = [], [{}]  # weights at 0 %, 35 %, 75 %, 100 % of the first network's training


def keep(epoch: int, record: dict) -> None:  # an epoch callback: after epochs 7, 15, 20 of 20
    if epoch in (7, 15, 20) and len(nets) == 0:
        snapshots.append(copy.deepcopy(net.state_dict()))


for seed in (1, 2):  # two trained networks, ~6 s on 2 cores
    torch.manual_seed(seed)
    net = mc.build_model("convfc", num_classes=10, input_shape=data.input_shape, **arch)
    snapshots[0] = snapshots[0] or copy.deepcopy(net.state_dict())
    cfg = mc.TrainConfig(epochs=20, lr=0.05, batch_size=64, seed=seed)
    mc.train_endpoint(net, data, cfg, callbacks=[keep])
    nets.append(net)
curve = mc.Bezier(nets[0], nets[0], nets[1])
mc.train_curve(curve, data, mc.TrainConfig(epochs=10, lr=0.03, batch_size=64))
net, x = nets[0], data.train_x  # 1437 inputs: CCA needs more samples than features
X = mc.collect_activations(nets[0], x, ["fc_part.1"]).layers["fc_part.1"]  # (n, 256) of network 1
Y = mc.collect_activations(nets[1], x, ["fc_part.1"]).layers["fc_part.1"]  # the same layer of network 2

mc.linear_cka(X, Y); mc.debiased_cka(X, Y); mc.rbf_cka(X, Y, threshold=1.0)
mc.cca(X, Y)  # the canonical correlations, largest first
mc.svcca(X, Y, keep=0.99); mc.pwcca(X, Y, side="x"); mc.minibatch_cka(X, Y, batch_size=256)
acts = mc.collect_activations(net, x, layers="blocks", policy="avgpool")  # .layers: name -> (n, f)
m = mc.Moments()  # stream CCA/SVCCA/PWCCA/linear CKA over batches
for batch in mc.stream_activations(net, x, ["conv_part.1", "fc_part.3"]):
    m.update(batch["conv_part.1"], batch["fc_part.3"])
m.svcca(0.99)
r = mc.over_training(nets[0], snapshots, data, [0, 0.35, 0.75, 1])  # every layer vs its final
r2 = mc.along_curve(curve, data, ts=np.linspace(0, 1, 5))  # the curve and the line
from modeconn.plotting import (  # noqa: E402
    plot_along_curve,
    plot_class_wise,
    plot_layer_similarity,
    plot_over_training,
)

plot_over_training(r).savefig("over_training.png")
