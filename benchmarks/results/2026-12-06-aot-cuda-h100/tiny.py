"""Does any CUDA AOTInductor package load here? A lone nn.Linear, plain and under autocast, each build and load in
its own process: `python benchmarks/results/2026-12-06-aot-cuda-h100/tiny.py`."""
import subprocess
import sys
import torch
class M(torch.nn.Module):
    def __init__(self, amp):
        super().__init__()
        self.lin, self.amp = torch.nn.Linear(64, 64), amp
    def forward(self, x):
        with torch.autocast("cuda", torch.bfloat16, enabled=self.amp):
            return self.lin(x).float()
if sys.argv[1:2] == ["build"]:
    amp = sys.argv[2] == "amp"
    torch.manual_seed(0)
    m = M(amp).cuda()
    with torch.no_grad():
        p = torch.export.export(m, (torch.randn(8, 64, device="cuda"),))
    torch._inductor.aoti_compile_and_package(p, package_path=sys.argv[3])
    print(sys.argv[2], "built", flush=True)
elif sys.argv[1:2] == ["load"]:
    run = torch._inductor.aoti_load_package(sys.argv[3])
    print(sys.argv[2], "loaded", run(torch.randn(8, 64, device="cuda")).shape, flush=True)
else:
    for mode in ("plain", "amp"):
        subprocess.run([sys.executable, __file__, "build", mode, f"/tmp/t-{mode}.pt2"])
        rc = subprocess.run([sys.executable, __file__, "load", mode, f"/tmp/t-{mode}.pt2"]).returncode
        print(mode, "load exit code", rc, flush=True)
    print(torch.__version__, torch.version.cuda)
