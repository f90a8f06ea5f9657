import torch

import modeconn as mc

data = mc.load_dataset("digits")  # tensors; never augmented for evaluation
arch = dict(widths=[16, 32, 64], hidden=256, pool_padding=1)  # the demo's ConvFC for 8x8 digits
nets = []
for seed in (1, 2):  # ~3 s each on 2 cores (the paper's ConvFC, hidden 1000: ~5x)
    torch.manual_seed(seed)
    net = mc.build_model("convfc", num_classes=10, input_shape=data.input_shape, **arch)
    mc.train_endpoint(net, data, mc.TrainConfig(epochs=20, lr=0.05, batch_size=64, seed=seed))
    nets.append(net)

curve = mc.Bezier(nets[0], nets[0], nets[1], degree=2)  # (model, start, end): ANY nn.Module
mc.train_curve(curve, data, mc.TrainConfig(epochs=20, lr=0.03, batch_size=64))  # ~4 s

curve.weights(0.5)  # name -> tensor dict of phi(0.5)
net = curve.network_at(0.5, data)  # the network at phi(0.5): a standalone nn.Module with
net(data.test_x[:8])  #   BatchNorm statistics recomputed at phi(0.5), eval mode
curve.recompute_bn(0.5, data)  # or refresh the curve's own network, then
curve.eval()(data.test_x[:8], t=0.5)  #   curve(x, t) at that t (at another t it raises)
path = mc.evaluate_path(curve, data, ts=21)  # PathResult; path.barriers(), .summary()
line = mc.evaluate_path(mc.Line(nets[0], nets[0], nets[1]), data, ts=21)
plane = mc.evaluate_plane_through_curve(curve, data, grid=11, margin=0.2)  # 121 points, ~6 s
# how points are evaluated: one settings object, or its fields as keywords
fast = mc.EvalSettings(bn_samples=500, eval_samples=300)  # compile=True pays ~20 s once
rough = mc.evaluate_plane_through_curve(curve, data, grid=21, settings=fast)
ens = mc.ensembles_along_curve(curve, data, ts=11)
path.save("results/path")  # results/path.npz + results/path.json
# own checkpoints: a plain state dict into a named architecture
torch.save(nets[0].state_dict(), "a.pt")
start, ckpt = mc.load_endpoint("a.pt", meta=mc.endpoint_meta("convfc", data, arch))
print(path.barriers()["test_error"], line.barriers()["test_error"])
