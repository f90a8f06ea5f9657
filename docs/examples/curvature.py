import torch

import modeconn as mc

data = mc.load_dataset("digits")
arch = dict(widths=[16, 32, 64], hidden=256, pool_padding=1)  # the demo's ConvFC, 77k weights
nets = []
for seed in (1, 2):  # two trained networks and a curve between them, ~5 s on 2 cores
    torch.manual_seed(seed)
    nets.append(mc.build_model("convfc", num_classes=10, input_shape=data.input_shape, **arch))
    mc.train_endpoint(nets[-1], data, mc.TrainConfig(epochs=10, lr=0.05, batch_size=64, seed=seed))
curve = mc.Bezier(nets[0], nets[0], nets[1])
mc.train_curve(curve, data, mc.TrainConfig(epochs=10, lr=0.03, batch_size=64))
net, d1, d2 = nets[0], mc.random_direction(nets[0], seed=1), mc.random_direction(nets[0], seed=2)

# Each Hessian-vector product costs ~3 gradients over the data budget: samples=512 of the
# 1437 train images here (None: all, ~3x the time). Progress bars count the products.
ext = mc.hessian_extremes(net, None, data, k=3, samples=512)  # weights: None, dict or (D,)
ext.lambda_max, ext.lambda_min, ext.top, ext.top_residuals, ext.hvps
tr = mc.hessian_trace(net, None, data, tol=0.05, max_samples=100, samples=512)  # ~100 HVPs
tr.mean, tr.stderr, tr.values  # tol=0.01 takes up to 25x the samples: 1/tol^2
rho = mc.hessian_density(net, None, data, steps=40, samples=512)  # rho.moment(j), .density(grid)
c = mc.directional_curvature(net, None, data, [d1, d2], samples=512)  # d^T H d / ||d||^2
budget = {"samples": 256, "max_steps": 30, "tol": 1e-3}  # per node: Lanczos to 1e-3
s = mc.curvature_surface(net, net, (d1, d2), data, grid=3, hessian=budget)  # 9 nodes, ~20 s
p = mc.curvature_path(curve, data, ts=3, hessian=budget)  # any Curve; a Line is the segment
from modeconn.plotting import plot_curvature_map, plot_curvature_path, plot_density  # noqa: E402

plot_curvature_map(s).savefig("curvature.png")
print(f"lambda_max {ext.lambda_max:.3f}, lambda_min {ext.lambda_min:.3f}, trace {tr.mean:.1f}")
