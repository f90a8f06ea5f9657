import torch

import modeconn as mc

data = mc.load_dataset("digits")
arch = dict(widths=[16, 32, 64], hidden=256, pool_padding=1)  # the demo's ConvFC
nets = []
for seed in (1, 2):  # two trained networks and a curve between them, ~5 s on 2 cores
    torch.manual_seed(seed)
    nets.append(mc.build_model("convfc", num_classes=10, input_shape=data.input_shape, **arch))
    mc.train_endpoint(nets[-1], data, mc.TrainConfig(epochs=10, lr=0.05, batch_size=64, seed=seed))
curve = mc.Bezier(nets[0], nets[0], nets[1])
mc.train_curve(curve, data, mc.TrainConfig(epochs=10, lr=0.03, batch_size=64))

net = nets[0]
d1, d2 = mc.random_direction(net, seed=1), mc.random_direction(net, seed=2)  # filter-normalised
# 21 x 15 = 315 points, ~5 s (each point: BatchNorm recompute + train and test passes); the
# paper's 51 x 51 costs 8x as much (resumable: partial="surface-partial.npz")
s = mc.evaluate_surface(net, net, (d1, d2), data, grid=(21, 15), span=((-1, 1), (-0.5, 1)))
s2 = mc.evaluate_surface(None, (curve, 0.5), (d1, d2), data, grid=11)  # around phi(0.5)
line = mc.evaluate_interpolation(None, nets[0], nets[1], data)  # Goodfellow's alpha in [-0.5, 1.5]
from modeconn.plotting import export_vts, plot_contour, plot_line, plot_surface_3d  # noqa: E402

plot_contour(s).savefig("surface.png")
plot_line(line).savefig("interpolation.png")
