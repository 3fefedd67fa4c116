"""Custom Lava processes (exporters/lava_processes.py), run in Lava fixed_pt on the CPU against
numpy references; each test also measures the process's latency in steps."""
import numpy as np
import pytest

from step_deploy.exporters.lava_compat import lava_available

pytestmark = pytest.mark.skipif(not lava_available(), reason="lava-nc is not installed")

T = 5


@pytest.fixture(scope="module")
def lp():
    from step_deploy.exporters import lava_models, lava_processes  # noqa: F401  (models: registered on import)

    return lava_processes


@pytest.fixture(scope="module")
def run():
    from step_deploy.exporters.lava_harness import run_open_loop

    return run_open_loop


def _pad(x, extra):
    """Append ``extra`` zero steps so that a delayed output is still recorded."""
    return np.concatenate([x, np.zeros((extra,) + x.shape[1:], x.dtype)])


def _assert_latency(out, ref, lat):
    """Row t of ``out`` is row t - lat of ``ref`` (zeros before): the measured latency."""
    n = ref.shape[0]
    assert np.all(out[:lat] == 0)
    np.testing.assert_array_equal(out[lat:lat + n], ref[: out.shape[0] - lat])


def _per_step(fn, *xs):
    return np.stack([np.asarray(fn(*(x[t] for x in xs))).reshape(-1) for t in range(xs[0].shape[0])])


rng = np.random.default_rng(7)


def test_elementwise_add_sums_fan_in(lp, run):
    xs = [rng.integers(-5, 6, (T, 6)) for _ in range(3)]
    add = lp.ElementwiseAdd((2, 3), n_inputs=3)
    # three sources into the same in port: Lava's InPort sums them
    from lava.proc.io.source import RingBuffer as Source

    for x in xs[1:]:
        Source(data=x.T.astype(np.int32)).s_out.connect(add.a_in)
    out = run({add.a_in: xs[0]}, {"y": add.s_out})["y"]
    _assert_latency(out, sum(xs), lp.LATENCY["ElementwiseAdd"])


@pytest.mark.parametrize("ta,tb", [(False, True), (True, False)])
def test_live_matmul_batched(lp, run, ta, tb):
    a_shape, b_shape = ((2, 3, 4), (2, 5, 4)) if tb else ((2, 4, 3), (2, 4, 5))
    a = rng.integers(0, 2, (T, 24))
    b = rng.integers(0, 2, (T, 40))
    mm = lp.LiveMatMul(a_shape, b_shape, transpose_a=ta, transpose_b=tb)
    assert mm.out_shape == (2, 3, 5)
    out = run({mm.a_in: a, mm.b_in: b}, {"y": mm.s_out})["y"]
    op = lambda x, f: np.swapaxes(x, -1, -2) if f else x  # noqa: E731
    ref = _per_step(lambda x, y: op(x.reshape(a_shape), ta) @ op(y.reshape(b_shape), tb), a, b)
    _assert_latency(out, ref, lp.LATENCY["LiveMatMul"])


def test_live_mul_broadcast(lp, run):
    a = rng.integers(0, 2, (T, 12))
    b = rng.integers(-3, 4, (T, 4))
    mul = lp.LiveMul((3, 4), (1, 4))
    out = run({mul.a_in: a, mul.b_in: b}, {"y": mul.s_out})["y"]
    ref = _per_step(lambda x, y: x.reshape(3, 4) * y.reshape(1, 4), a, b)
    _assert_latency(out, ref, lp.LATENCY["LiveMul"])


@pytest.mark.parametrize("axis,keepdim", [(1, False), (-1, True)])
def test_axis_sum(lp, run, axis, keepdim):
    x = rng.integers(0, 2, (T, 24))
    s = lp.AxisSum((2, 3, 4), axis, keepdim)
    out = run({s.a_in: x}, {"y": s.s_out})["y"]
    ref = _per_step(lambda v: v.reshape(2, 3, 4).sum(axis=axis, keepdims=keepdim), x)
    assert out.shape[1] == int(np.prod(s.out_shape))
    _assert_latency(out, ref, lp.LATENCY["AxisSum"])


def test_maxpool2d_against_torch_semantics(lp, run):
    torch = pytest.importorskip("torch")
    x = rng.integers(-4, 5, (T, 2 * 5 * 5))
    pool = lp.MaxPool2d((2, 5, 5), kernel=3, stride=2, padding=1)
    out = run({pool.a_in: x}, {"y": pool.s_out})["y"]
    ref = torch.nn.functional.max_pool2d(torch.tensor(x.reshape(T, 2, 5, 5), dtype=torch.float64),
                                         3, 2, 1).reshape(T, -1).numpy().astype(np.int64)
    assert pool.out_shape == (2, 3, 3)
    _assert_latency(out, ref, lp.LATENCY["MaxPool2d"])


def test_permute(lp, run):
    x = rng.integers(0, 9, (T, 24))
    p = lp.Permute((2, 3, 4), (1, 0, 2))
    out = run({p.a_in: x}, {"y": p.s_out})["y"]
    _assert_latency(out, _per_step(lambda v: v.reshape(2, 3, 4).transpose(1, 0, 2), x),
                    lp.LATENCY["Permute"])


def test_fixed_lif_is_bit_identical_to_lava_lif(lp, run):
    from lava.proc.lif.process import LIF

    n, steps = 6, 12
    a = rng.integers(-40, 120, (steps, n))
    a[3, 0], a[4, 0], a[5, 1] = 150_000, 140_000, -150_000  # the current wraps at ±2^23
    a[6, 2], a[7, 2] = -130_000, -1_000  # the voltage saturates at -(2^23 - 1)
    kw = dict(du=1000, dv=300, vth=300, bias_mant=np.array([0, 5, -7, 100, 0, 3]),
              bias_exp=np.array([0, 1, 2, 3, 0, 7]))
    from step_deploy.exporters.lava_kernels import lif_fixed_step

    u = v = np.zeros(n, np.int64)
    seen = set()
    for t in range(steps):  # the input exercises wrap and saturation (numpy model)
        u0 = u
        u, v, s, v_pre = lif_fixed_step(u, v, a[t], **kw)
        seen |= {"wrap"} if np.any(np.sign(u) * np.sign(u0 + (a[t] << 6)) < 0) else set()
        seen |= {"clip"} if np.any(np.abs(v_pre) == 2**23 - 1) else set()
    assert seen == {"wrap", "clip"}
    ref, ours = LIF(shape=(n,), **kw), lp.FixedLIF((n,), compare=">", **kw)
    # one graph: the same array feeds both neurons from one source
    r = run({ref.a_in: a, ours.a_in: a}, {"s_ref": ref.s_out, "s_our": ours.s_out},
            read_vars={"v_ref": ref.v, "u_ref": ref.u, "v_our": ours.v, "u_our": ours.u})
    assert 0.2 < r["s_ref"].mean() < 0.6
    for k in ("s", "v", "u"):
        np.testing.assert_array_equal(r[f"{k}_our"], r[f"{k}_ref"])
    # latency 0 for both: the first input row already drives the first output row
    assert lp.LATENCY["FixedLIF"] == lp.LATENCY["LIF"] == 0


def test_fixed_lif_ge_fires_on_ties_and_latency_zero(lp, run):
    from lava.proc.lif.process import LIF

    # STEP's tau=2 neuron: du=4095 (u = a_in << 6), dv=2048 (halve v). Input 4 against vth 4.
    x = np.array([[4], [4], [0], [8], [0]])
    kw = dict(du=4095, dv=2048, vth=4)
    gt, ge, lava_lif = lp.FixedLIF((1,), compare=">", **kw), lp.FixedLIF((1,), compare=">=", **kw), \
        LIF(shape=(1,), **kw)
    r = run({gt.a_in: x, ge.a_in: x, lava_lif.a_in: x},
            {">": gt.s_out, ">=": ge.s_out, "lava": lava_lif.s_out})
    # '>': v = 256 (= thr, no), 128+256=384 (fire), 0, 512 (fire), 0
    assert r[">"][:, 0].tolist() == r["lava"][:, 0].tolist() == [0, 1, 0, 1, 0]
    # '>=': v = 256 fires at once (a tie: latency 0); then 256 fires again; 0; 512 fires
    assert r[">="][:, 0].tolist() == [1, 1, 0, 1, 0]


def test_fixed_lif_graded_payload_is_pre_reset_voltage(lp, run):
    lif = lp.FixedLIF((2,), du=4095, dv=0, vth=3, graded=True)
    out = run({lif.a_in: np.array([[5, 1], [0, 1], [0, 2]])}, {"s": lif.s_out})["s"]
    assert out.tolist() == [[320, 0], [0, 0], [0, 256]]


def test_accumulator_total_and_running_sum(lp, run):
    x = rng.integers(-3, 9, (T, 4))
    acc = lp.Accumulator((4,))
    r = run({acc.a_in: x}, {"y": acc.s_out}, read_vars={"total": acc.total})
    np.testing.assert_array_equal(r["total"], x.sum(0))
    _assert_latency(r["y"], np.cumsum(x, 0), lp.LATENCY["Accumulator"])


@pytest.mark.parametrize("steps", [0, 2])
def test_delay(lp, run, steps):
    x = rng.integers(0, 5, (T, 3))
    d = lp.Delay((3,), steps)
    out = run({d.a_in: _pad(x, steps)}, {"y": d.s_out})["y"]
    assert lp.latency(d) == steps
    _assert_latency(out, x, steps)


@pytest.mark.parametrize("kind,weight_exp", [("Dense", 0), ("Dense", 2), ("Dense", -1),
                                             ("Sparse", 1)])
def test_lava_dense_and_sparse_accept_graded_input(lp, run, kind, weight_exp):
    from lava.proc.dense.process import Dense
    from lava.proc.sparse.process import Sparse
    from scipy.sparse import csr_matrix

    w = np.array([[3, -2, 5], [-7, 1, 0]])  # mixed signs: Lava drops the LSB of every weight
    x = rng.integers(-20, 40, (T, 3))
    proc = Dense(weights=w, num_message_bits=24, weight_exp=weight_exp) if kind == "Dense" \
        else Sparse(weights=csr_matrix(w), num_message_bits=24, weight_exp=weight_exp)
    out = run({proc.s_in: _pad(x, 1)}, {"a": proc.a_out})["a"]
    acc = x @ ((w >> 1) << 1).T
    ref = acc << weight_exp if weight_exp >= 0 else acc >> -weight_exp
    _assert_latency(out, ref, lp.LATENCY[kind])


def test_chain_latencies_add_up(lp, run):
    """Permute -> MaxPool2d -> graded Dense -> FixedLIF: total latency 0 + 0 + 1 + 0 = 1."""
    from lava.proc.dense.process import Dense

    x = rng.integers(0, 2, (T, 2 * 4 * 4))
    perm = lp.Permute((4, 4, 2), (2, 0, 1))  # HWC -> CHW
    pool = lp.MaxPool2d((2, 4, 4), kernel=2)
    w = rng.integers(0, 6, (3, 8)) * 2
    dense = Dense(weights=w, num_message_bits=8)
    lif = lp.FixedLIF((3,), du=4095, dv=0, vth=5, compare=">=")
    perm.s_out.connect(pool.a_in)
    pool.s_out.connect(dense.s_in)
    dense.a_out.connect(lif.a_in)
    out = run({perm.a_in: _pad(x, 1)}, {"s": lif.s_out})["s"]
    pooled = _per_step(lambda v: v.reshape(4, 4, 2).transpose(2, 0, 1).reshape(2, 2, 2, 2, 2)
                       .max(axis=(2, 4)), x)
    a = np.vstack([np.zeros((1, 3), np.int64), pooled @ w.T])  # Dense: one step late
    v, spikes = np.zeros(3, np.int64), []
    for t in range(T + 1):
        v = v + (a[t] << 6)
        s = v >= 5 << 6
        v[s] = 0
        spikes.append(s.astype(np.int64))
    np.testing.assert_array_equal(out, np.array(spikes))
    assert sum(lp.latency(p) for p in (perm, pool, dense, lif)) == 1


def test_overflow_is_an_error_not_a_wrap(lp, run):
    mul = lp.LiveMul((2,), (2,))
    big = np.array([[2**20, 1]])
    with pytest.raises(RuntimeError, match="Exception"):
        run({mul.a_in: big, mul.b_in: np.array([[2**12, 1]])}, {"y": mul.s_out})


def test_shape_errors(lp):
    with pytest.raises(ValueError, match="cannot multiply"):
        lp.LiveMatMul((2, 3), (2, 3))
    with pytest.raises(ValueError, match="perm"):
        lp.Permute((2, 3), (0, 0))
    with pytest.raises(ValueError, match="compare"):
        lp.FixedLIF((2,), compare="<")
    with pytest.raises(ValueError, match="padding"):
        lp.MaxPool2d((1, 4, 4), kernel=2, padding=2)


def test_models_are_registered_so_lava_skips_its_directory_scan(lp):
    from lava.magma.compiler.compiler_graphs import ProcGroupDiGraphs
    from lava.proc.dense.process import Dense
    from step_deploy.exporters import lava_models

    assert ProcGroupDiGraphs._find_proc_models(lp.Permute((2, 3), (1, 0))) == \
        [lava_models.PyPermuteModel]
    found = ProcGroupDiGraphs._find_proc_models(Dense(weights=np.eye(2)))  # lava's own: searched
    assert any(m.__name__ == "PyDenseModelBitAcc" for m in found)
