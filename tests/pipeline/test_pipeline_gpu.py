"""The model pipeline on CUDA: QuantLinear's fused path vs the CPU module, CUDA graphs, and a
whole-model quantize of SmolLM2 blocks on the GPU.  Run with ``pytest -m gpu tests/pipeline``.

Bound (tests/gpu/test_e8p_gpu.py, tests/gpu/test_qtip_layer_gpu.py): in the processed
domain the decode-matvec errs by e_r <= (2^-11 + n 2^-22) sum_c |z_c||W~_rc| (z rounded to
float16, float32 tensor-core accumulation); the output RHT is orthogonal, so
||y - y_ref||_2 <= ||e||_2 plus the two fp32 RHTs (< 1e-5 ||x|| ||W~||_F). A float16 input
adds nothing to z's rounding (it is already fp16); the output is returned in the input's
dtype with the bias added in that dtype: three more roundings of unit 2^-24 (fp32) or 2^-11
(fp16).
"""
import numpy as np
import pytest

import fast

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda(torch):
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    pytest.importorskip("cupy")
    return torch.device("cuda")


def _layers(smollm2_base):
    """Real SmolLM2 weights (down_proj 576 x 1536, k_proj 192 x 576, up_proj 1536 x 576)
    quantized on the GPU (fast recipes on CuPy arrays), codes brought back to the host."""
    import cupy as cp

    model, _ = smollm2_base
    rng = np.random.default_rng(0)
    lins = {"down": model.model.layers[0].mlp.down_proj, "k": model.model.layers[0].self_attn.k_proj,
            "up": model.model.layers[0].mlp.up_proj}
    out = {}
    for name, (method, bits, opts) in {"down": ("quip#", 2, {}), "k": ("quip#", 4, {}),
                                       "up": ("qtip", 2, {"L": 16})}.items():
        W = lins[name].weight.detach().double().numpy()
        n = W.shape[1]
        X = rng.normal(size=(2 * n, n))
        layer = fast.quantize_linear(cp.asarray(W), cp.asarray(X.T @ X / (2 * n)), method, bits, seed=1, **opts)
        layer.codes = cp.asnumpy(layer.codes)
        layer._cuda_pipeline = False
        out[name] = layer
    return out


@pytest.fixture(scope="module")
def layers(smollm2_base):
    return _layers(smollm2_base)


def _bound(layer, x64):
    Wt = np.asarray(layer.processed_weights(np))
    n = layer.shape[1]
    z = layer.input_transform.forward(x64)
    e = (2.0**-11 + n * 2.0**-22) * (np.abs(z) @ np.abs(Wt).T)
    return np.linalg.norm(e, axis=1) + 1e-5 * np.linalg.norm(x64, axis=1) * np.linalg.norm(Wt)


@pytest.mark.parametrize("name", ["down", "k", "up"])
@pytest.mark.parametrize("batch", [1, 2, 5, 8, 9, 16])
def test_cuda_quantlinear_equals_cpu_within_bound(layers, cuda, torch, name, batch):
    from quipref.pipeline import QuantLinear

    layer = layers[name]
    m, n = layer.shape
    bias = torch.randn(m)
    cpu = QuantLinear(layer, bias)
    gpu = QuantLinear(layer, bias).to(cuda)
    import cupy as cp

    assert isinstance(gpu.layer.codes, cp.ndarray) and gpu.layer.cuda_matvec() is not None
    x = torch.randn(batch, n, dtype=torch.float64)
    b64 = bias.double().numpy()
    for dt in (torch.float32, torch.float16):
        xd = x.to(dt)
        with torch.inference_mode():
            y = gpu(xd.to(cuda))
        assert y.dtype == dt and y.device.type == "cuda" and tuple(y.shape) == (batch, m)
        x64 = xd.double()
        ref = cpu(x64).numpy()            # the CPU module on the same (rounded) input, float64
        err = np.linalg.norm(y.double().cpu().numpy() - ref, axis=1)
        # kernel bound, plus the output's roundings in dtype dt: the product cast to dt, the
        # bias cast to dt and their sum rounded (three roundings of unit u = 2^-24 or 2^-11,
        # each <= u times a norm <= ||ref|| + ||b||)
        u = 2.0**-24 if dt == torch.float32 else 2.0**-11
        bound = _bound(layer, x64.numpy()) + 3 * u * (np.linalg.norm(ref, axis=1) + np.linalg.norm(b64))
        assert np.all(err <= bound), (name, batch, dt, err / bound)


def test_cuda_quantlinear_inside_cuda_graph(layers, cuda, torch):
    from quipref.pipeline import QuantLinear

    layer = layers["up"]
    m, n = layer.shape
    q = QuantLinear(layer, torch.randn(m)).to(cuda)
    static_x = torch.randn(4, n, device=cuda)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():   # warm up on the capture stream
        for _ in range(2):
            q(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    g = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(g, stream=stream):
        static_y = q(static_x)
    for seed in range(3):
        torch.manual_seed(seed)
        static_x.copy_(torch.randn(4, n, device=cuda))
        g.replay()
        torch.cuda.synchronize()
        with torch.no_grad():
            eager = q(static_x)
        x64 = static_x.double().cpu().numpy()
        err = np.linalg.norm(static_y.double().cpu().numpy() - eager.double().cpu().numpy(), axis=1)
        assert np.all(err <= 2 * _bound(layer, x64)), seed   # both within the bound of the exact value


def test_whole_model_quantize_on_cuda(smollm2, smollm2_calib, cuda, torch):
    """Two SmolLM2 blocks quantized on the GPU (fast backend, CuPy W and H): the QuIP# codes
    agree with the CPU run (the GPU LDLQ sums in another order: >= 99 % equal codes, see
    tests/gpu/test_e8p_gpu.py) and the model runs on the fused path."""
    import cupy as cp

    from quipref.pipeline import QuantLinear, quantize_model

    model, _, restore = smollm2
    sel = r"re:model\.layers\.[01]\..*"
    quantize_model(model, "quip#", 2, smollm2_calib, modules=sel, progress=False)
    cpu_codes = {n: np.asarray(m.layer.codes) for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    with torch.no_grad():
        cpu_logits = model(input_ids=smollm2_calib[:1], use_cache=False).logits.double()
    restore()
    model.to(cuda)
    try:
        quantize_model(model, "quip#", 2, smollm2_calib.to(cuda), modules=sel, progress=False)
        qs = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
        assert set(qs) == set(cpu_codes) and len(qs) == 14
        for n, m in qs.items():
            assert isinstance(m.layer.codes, cp.ndarray)
            assert np.mean(cp.asnumpy(m.layer.codes) == cpu_codes[n]) >= 0.99, n
        with torch.no_grad():
            logits = model(input_ids=smollm2_calib[:1].to(cuda), use_cache=False).logits.double().cpu()
        rel = float((logits - cpu_logits).norm() / cpu_logits.norm())
        assert rel < 0.05, rel
    finally:
        model.to("cpu")
