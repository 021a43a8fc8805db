"""Inverting Gradients (Geiping et al., NeurIPS 2020), the authors' ``inversefed``: ``GradientReconstructor``.

Cases: ``ig1`` reconstructs 1 CIFAR image (batch 1), ``ig8`` 8 images at once (their ``num_images``), from the
parameter gradient of their ``ResNet20`` (BasicBlocks [3, 3, 3], width 16, strides 1, 2, 2, average pooling: the
closest to our ``resnet20``) in eval mode, labels given. Their config: cosine loss (``cost_fn='sim'``), total
variation 1e-4, signed Adam, lr 0.1, restarts 1, ``boxed``, ``lr_decay``, ``init='randn'``. One timed call is
``reconstruct()`` with ``max_iterations = N`` (default 20): the iteration loop plus their set-up and final scoring.
``it_per_s`` is N / warm seconds.

torchvision does not import beside this torch (its compiled ops are built for another torch), and inversefed imports
it at module level: for data sets and transforms (off the measured path, replaced by placeholders) and for the ResNet
itself: their ``ResNet`` subclasses ``torchvision.models.ResNet`` (borrowing ``_make_layer`` and ``forward``) and builds
``torchvision.models.resnet.BasicBlock``. When torchvision fails to import, the stub gives those three a plain
restatement of torchvision's definitions (same layers, same order), written here, not copied; the JSON note says so.
"""

from __future__ import annotations

from _common import add_repo, cold_warm, forget, parse, quiet, skip, stub_modules, write

PEER = "invertinggradients"


def _torchvision_stub() -> None:
    import torch.nn as nn

    stub_modules(
        "torchvision.models.resnet", "torchvision.models.mobilenet", "torchvision.transforms", "torchvision.datasets"
    )
    import sys

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(
            self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64, dilation=1, norm_layer=None
        ):
            super().__init__()
            if groups != 1 or base_width != 64 or dilation > 1:
                raise ValueError("BasicBlock supports only groups=1, base_width=64, dilation=1")
            norm_layer = norm_layer or nn.BatchNorm2d
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn1 = norm_layer(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
            self.bn2 = norm_layer(planes)
            self.downsample = downsample
            self.stride = stride

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class Bottleneck(nn.Module):  # named by models.py for isinstance checks only (ResNet-50 and up are not used)
        expansion = 4

    class ResNet(nn.Module):
        def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
            norm_layer = self._norm_layer
            if dilate:
                raise ValueError("dilation is not supported by this stub")
            downsample = None
            if stride != 1 or self.inplanes != planes * block.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                    norm_layer(planes * block.expansion),
                )
            layers = [
                block(
                    self.inplanes, planes, stride, downsample, self.groups, self.base_width, self.dilation, norm_layer
                )
            ]
            self.inplanes = planes * block.expansion
            layers += [
                block(
                    self.inplanes,
                    planes,
                    groups=self.groups,
                    base_width=self.base_width,
                    dilation=self.dilation,
                    norm_layer=norm_layer,
                )
                for _ in range(1, blocks)
            ]
            return nn.Sequential(*layers)

        def forward(self, x):
            return self._forward_impl(x)

    res = sys.modules["torchvision.models.resnet"]
    res.BasicBlock, res.Bottleneck, res.ResNet = BasicBlock, Bottleneck, ResNet
    sys.modules["torchvision.models"].ResNet = ResNet


def main() -> None:
    args = parse(PEER, ("ig1", "ig8"), 20, "iterations per timed reconstruct() call")
    add_repo(args.repo)
    note = []
    try:
        import torchvision  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any failure means: use the stub
        forget("torchvision")
        _torchvision_stub()
        note.append(
            f"torchvision does not import here ({type(e).__name__}: {str(e)[:60]}): replaced by a stub; "
            "its ResNet._make_layer/forward and BasicBlock restated in the adapter (same layers), data sets "
            "and transforms placeholders (off the measured path)"
        )
    try:
        import six  # noqa: F401
    except ImportError:
        stub_modules("six.moves.urllib")
        note.append("six (imported by inversefed/data for downloads) replaced by a stub")
    import torch

    try:
        import inversefed
    except Exception as e:  # noqa: BLE001
        skip(args, PEER, f"inversefed does not import: {type(e).__name__}: {e}")

    images = 1 if args.case == "ig1" else 8
    model, _ = inversefed.construct_model("ResNet20", num_classes=10, num_channels=3, seed=0)
    model.eval()
    dm = torch.as_tensor([0.4914672374725342, 0.4822617471218109, 0.4467701315879822])[:, None, None]
    ds = torch.as_tensor([0.24703224003314972, 0.24348513782024384, 0.26158785820007324])[:, None, None]
    g = torch.Generator().manual_seed(0)
    gt = (torch.rand(images, 3, 32, 32, generator=g) - dm) / ds
    labels = torch.randint(0, 10, (images,), generator=g)
    model.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(gt), labels)
    target = [t.detach() for t in torch.autograd.grad(loss, model.parameters())]
    config = dict(
        signed=True,
        boxed=True,
        cost_fn="sim",
        indices="def",
        weights="equal",
        lr=0.1,
        optim="adam",
        restarts=1,
        max_iterations=args.n,
        total_variation=1e-4,
        init="randn",
        filter="none",
        lr_decay=True,
        scoring_choice="loss",
    )
    rec = inversefed.GradientReconstructor(model, (dm, ds), config, num_images=images)

    def call():
        torch.manual_seed(1)
        return rec.reconstruct(target, labels, img_shape=(3, 32, 32))

    cold, warm = cold_warm(call, args.repeat)
    with quiet():
        out, _ = call()
    if tuple(out.shape) != (images, 3, 32, 32):
        skip(args, PEER, f"unexpected output shape {tuple(out.shape)}")
    write(
        args.json,
        {
            "peer": PEER,
            "case": args.case,
            "n": args.n,
            "images": images,
            "cold_s": cold,
            "warm_s": warm,
            "unit": "s per call",
            "it_per_s": args.n / warm,
            "what": f"inversefed.GradientReconstructor(num_images={images}).reconstruct, {args.n} iterations, ResNet20 "
            "(width 16), eval mode, labels given, cosine loss, TV 1e-4, signed Adam lr 0.1, restarts 1, boxed, "
            "lr decay",
            "note": "; ".join(note + [f"cpu, torch {torch.__version__}, {torch.get_num_threads()} threads"]),
        },
    )


if __name__ == "__main__":
    main()
