import torch

import modeconn as mc

data = mc.load_dataset("spiral")  # the post's 3-class spiral
torch.manual_seed(1)
net = mc.build_model("mlp", num_classes=3, input_shape=data.input_shape, hidden=[100])
cfg = mc.TrainConfig(epochs=50, lr=0.05, batch_size=64, seed=1)
rec = mc.record_trajectory("runs/t", net, data, cfg, every="epoch")  # or every=N steps
mc.train_endpoint(net, data, cfg, checkpoint="runs/t.pt", **rec.hooks())  # ~3 s; train_curve too
store = mc.TrajectoryStore("runs/t")  # store.points(): (T, D) memory map; .steps, .losses
dirs, ratios = mc.pca_directions(store)  # (2, D) orthonormal, explained-variance ratios (2,)
origin = torch.as_tensor(store.points()[-1].copy())  # the final point
coords, residual = mc.project(store, origin, dirs)  # least squares; distance to the plane
result, surface = mc.evaluate_trajectory(net, store, data, directions="pca", grid=25)  # ~5 s
from modeconn.plotting import plot_gallery, plot_trajectories, plot_trajectory  # noqa: E402
from modeconn.plotting.animation import animate_curve_training, animate_trajectory  # noqa: E402

plot_trajectory(result, surface).savefig("trajectory.png")
print(f"2 PCs hold {ratios.sum():.1%} of the path's variance")
