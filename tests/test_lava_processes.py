"""Custom Lava processes (exporters/lava_processes.py), run in Lava fixed_pt on the CPU against
numpy references; each test also measures the process's latency in steps."""
import numpy as np
import pytest

from step_deploy.simulators.lava_compat import lava_available

pytestmark = pytest.mark.skipif(not lava_available(), reason="lava-nc is not installed")

T = 5


@pytest.fixture(scope="module")
def lp():
    from step_deploy.exporters import lava_processes

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
    a[3, 0], a[4, 0], a[5, 1] = 150_000, 140_000, -150_000  # current wraps, voltage saturates
    kw = dict(du=1000, dv=300, vth=37, bias_mant=np.array([0, 5, -7, 100, 0, 3]),
              bias_exp=np.array([0, 1, 2, 3, 0, 7]))
    ref, ours = LIF(shape=(n,), **kw), lp.FixedLIF((n,), compare=">", **kw)
    ref_s = [None]

    def read_v(proc):  # Var.get() inside the same run as the sinks
        return proc.v.get().astype(np.int64), proc.u.get().astype(np.int64)

    # one run, one source feeding both neurons
    from lava.proc.io.sink import RingBuffer as Sink

    sink = Sink(shape=(n,), buffer=steps)
    ref.s_out.connect(sink.a_in)
    from lava.proc.io.source import RingBuffer as Source

    Source(data=a.T.astype(np.int32)).s_out.connect(ref.a_in)
    from lava.magma.core.run_conditions import RunSteps
    from step_deploy.exporters.lava_harness import fixed_pt_config

    ours_sink = Sink(shape=(n,), buffer=steps)
    ours.s_out.connect(ours_sink.a_in)
    Source(data=a.T.astype(np.int32)).s_out.connect(ours.a_in)
    # ref and ours are separate graphs: run each (same input)
    for proc, snk in ((ref, sink), (ours, ours_sink)):
        try:
            proc.run(condition=RunSteps(num_steps=steps), run_cfg=fixed_pt_config())
            ref_s.append((snk.data.get().T.astype(np.int64), *read_v(proc)))
        finally:
            proc.stop()
    (s_ref, v_ref, u_ref), (s_our, v_our, u_our) = ref_s[1], ref_s[2]
    assert s_ref.sum() > 0 and not s_ref.all()
    np.testing.assert_array_equal(s_our, s_ref)
    np.testing.assert_array_equal(v_our, v_ref)
    np.testing.assert_array_equal(u_our, u_ref)
    assert lp.LATENCY["FixedLIF"] == lp.LATENCY["LIF"] == 0  # row t reacts to a[t] (see below)


def test_fixed_lif_ge_fires_on_ties_and_latency_zero(lp, run):
    # STEP's tau=2 neuron: du=4095 (u = a_in << 6), dv=2048 (halve v). Input 4 against vth 4.
    x = np.array([[4], [4], [0], [8], [0]])
    out = {}
    for cmp in (">", ">="):
        lif = lp.FixedLIF((1,), du=4095, dv=2048, vth=4, compare=cmp)
        out[cmp] = run({lif.a_in: x}, {"s": lif.s_out})["s"][:, 0].tolist()
    # '>': v = 256 (=thr, no), 128+256=384 (fire), 0, 512 (fire), 0
    assert out[">"] == [0, 1, 0, 1, 0]
    # '>=': v = 256 fires at once (a tie); then 256 fires again; 0; 512 fires
    assert out[">="] == [1, 1, 0, 1, 0]


def test_fixed_lif_graded_payload_is_pre_reset_voltage(lp, run):
    lif = lp.FixedLIF((2,), du=4095, dv=0, vth=3, graded=True)
    out = run({lif.a_in: np.array([[5, 1], [0, 1], [0, 2]])}, {"s": lif.s_out})["s"]
    assert out.tolist() == [[320, 0], [0, 0], [0, 256]]


def test_accumulator_total_and_running_sum(lp, run):
    from lava.magma.core.run_conditions import RunSteps
    from lava.proc.io.source import RingBuffer as Source
    from step_deploy.exporters.lava_harness import fixed_pt_config

    x = rng.integers(-3, 9, (T, 4))
    acc = lp.Accumulator((4,))
    Source(data=x.T.astype(np.int32)).s_out.connect(acc.a_in)
    try:
        acc.run(condition=RunSteps(num_steps=T), run_cfg=fixed_pt_config())
        total = acc.total.get().astype(np.int64)
    finally:
        acc.stop()
    np.testing.assert_array_equal(total, x.sum(0))
    acc2 = lp.Accumulator((4,))
    out = run({acc2.a_in: x}, {"y": acc2.s_out})["y"]
    _assert_latency(out, np.cumsum(x, 0), lp.LATENCY["Accumulator"])


@pytest.mark.parametrize("steps", [0, 2])
def test_delay(lp, run, steps):
    x = rng.integers(0, 5, (T, 3))
    d = lp.Delay((3,), steps)
    out = run({d.a_in: _pad(x, steps)}, {"y": d.s_out})["y"]
    assert lp.latency(d) == steps
    _assert_latency(out, x, steps)


@pytest.mark.parametrize("weight_exp", [0, 2, -1])
def test_lava_dense_accepts_graded_input(lp, run, weight_exp):
    from lava.proc.dense.process import Dense

    w = np.array([[3, -2, 5], [-7, 1, 0]])  # mixed signs: Lava drops the LSB of every weight
    x = rng.integers(-20, 40, (T, 3))
    dense = Dense(weights=w, num_message_bits=24, weight_exp=weight_exp)
    out = run({dense.s_in: _pad(x, 1)}, {"a": dense.a_out})["a"]
    w_eff = (w >> 1) << 1
    acc = x @ w_eff.T
    ref = acc << weight_exp if weight_exp >= 0 else acc >> -weight_exp
    _assert_latency(out, ref, lp.LATENCY["Dense"])


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
