"""Types of the compiled kernels (``_native.c``); buffers are contiguous numpy arrays, ranges are [start, stop)."""

from typing import Any

def gather_u8(x: Any, runs: Any, out: Any, planes: int, p: int, r: int, start: int, stop: int, /) -> None: ...
def scatter_f32(blocks: Any, runs: Any, out: Any, planes: int, p: int, r: int, start: int, stop: int, /) -> None: ...
def shuffle_rows(
    x: Any, perm: Any, out: Any, n: int, d: int, r: int, inverse: bool, start: int, stop: int, /
) -> None: ...
def shuffle_elements(x: Any, perm: Any, out: Any, m: int, inverse: bool, start: int, stop: int, /) -> None: ...
def fisher_yates(rand: Any, out: Any, n: int, start: int, stop: int, /) -> None: ...
def mix_encode(
    priv: Any,
    pub: Any,
    partners: Any,
    slot_public: Any,
    lam: Any,
    scale: Any,
    shift: Any,
    mask: Any,
    flip: bool,
    out: Any,
    n_priv: int,
    n_pub: int,
    n: int,
    k: int,
    c: int,
    p: int,
    mask_bytes: int,
    start: int,
    stop: int,
    /,
) -> None: ...
def ssim_box_u8(
    x: Any,
    y: Any,
    out: Any,
    span: Any,
    n: int,
    c: int,
    h: int,
    w: int,
    sxn: int,
    sxc: int,
    sxh: int,
    sxw: int,
    syn: int,
    syc: int,
    syh: int,
    syw: int,
    win: int,
    c1n: float,
    c2n: float,
    cov: float,
    start: int,
    stop: int,
    /,
) -> None: ...
def ssim_sep(
    x: Any,
    y: Any,
    double: bool,
    weights: Any,
    out: Any,
    span: Any,
    n: int,
    c: int,
    h: int,
    w: int,
    sxn: int,
    sxc: int,
    sxh: int,
    sxw: int,
    syn: int,
    syc: int,
    syh: int,
    syw: int,
    c1: float,
    c2: float,
    cov: float,
    start: int,
    stop: int,
    /,
) -> None: ...
