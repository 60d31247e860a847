"""Issue 19, one device call: which backbones' AOTInductor packages load and run on this GPU, each build and each
load in its own process. From the repository root:
`PYTHONPATH=src python benchmarks/results/2026-12-06-aot-cuda-h100/probe.py`."""
import subprocess
import sys
import torch
from liquidgen.models import build_model
from liquidgen.aot import _Signature

def model(name, kernels):
    opts = {} if name == "unet" else {"kernels": kernels}
    torch.manual_seed(0)
    return build_model(name, "28" if name == "unet" else "S", 1, 28, 10, **opts).cuda().eval()

def inputs():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(8, 1, 28, 28, generator=g).cuda(), torch.rand(8, generator=g).cuda(),
            torch.randint(0, 10, (8,), generator=g).cuda())

if sys.argv[1:2] == ["build"]:
    name, kernels, path = sys.argv[2:]
    m = model(name, kernels)
    sig = _Signature(m, ("x", "t", "y"), torch.device("cuda"), "bf16")
    with torch.no_grad():
        p = torch.export.export(sig, inputs())
    ops = sorted({str(n.target) for n in p.graph.nodes if n.op == "call_function"
                  and not str(n.target).startswith("aten.")})
    print(name, kernels, "non-aten ops:", ops, flush=True)
    torch._inductor.aoti_compile_and_package(p, package_path=path)
    print(name, kernels, "built", flush=True)
elif sys.argv[1:2] == ["load"]:
    name, kernels, path = sys.argv[2:]
    run = torch._inductor.aoti_load_package(path)
    print(name, kernels, "loaded", flush=True)
    out = run(*inputs())
    sig = _Signature(model(name, kernels), ("x", "t", "y"), torch.device("cuda"), "bf16")
    with torch.no_grad():
        ref = sig(*inputs())
    print(name, kernels, "ran; max |aot - eager|", (out.float() - ref.float()).abs().max().item(), flush=True)
else:
    cases = [("unet", "auto"), ("liquid", "auto"), ("liquid", "torch")]
    procs = [subprocess.Popen([sys.executable, __file__, "build", n, k, f"/tmp/p-{n}-{k}.pt2"]) for n, k in cases]
    for p in procs:
        p.wait()
    for n, k in cases:
        rc = subprocess.run([sys.executable, __file__, "load", n, k, f"/tmp/p-{n}-{k}.pt2"]).returncode
        print(n, k, "load process exit code", rc, flush=True)
