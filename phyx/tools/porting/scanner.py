"""Find CUDA-only code and the numerical traps of a port in a source tree.

Python files are read with `ast` (imports are resolved, so `import torch.nn.functional as F`
then `F.gelu` is seen as torch's gelu, and a string in a docstring is not a device string);
files that do not parse, and shell / config files, fall back to line regexes. A line with
`# port-ok` (or the lint's `# vendor-ok`) is not reported.
"""
from __future__ import annotations

import ast
import fnmatch
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from phyx.tools.porting.rules import CATEGORIES

SUPPRESS = ("# port-ok", "# vendor-ok")
DEFAULT_EXCLUDES = (".git", "__pycache__", ".venv", "venv", ".tox", ".eggs", "build", "dist",
                    "node_modules", "*.egg-info")
CONFIG_SUFFIXES = (".sh", ".bash", ".yaml", ".yml", ".cfg", ".ini", ".toml")

# --- what counts as what (canonical dotted names after import resolution) --------------
VENDOR_MODULES = {
    "flash_attn": "flash-attn", "flash_attn_interface": "flash-attn",
    "flash_attn_2_cuda": "flash-attn", "flash_attn_3": "flash-attn",
    "apex": "apex", "transformer_engine": "transformer-engine",
    "transformer_engine_torch": "transformer-engine", "natten": "natten",
    "pynvml": "nvml", "nvidia_smi": "nvml", "py3nvml": "nvml", "xformers": "xformers",
}
CUDA_GRAPH = {"CUDAGraph", "graph", "graphs", "make_graphed_callables", "graph_pool_handle"}
CUDA_STREAM = {"Stream", "stream", "current_stream", "default_stream", "Event", "ExternalStream",
               "set_stream", "StreamContext"}
GELU = {"torch.nn.functional.gelu", "torch.nn.GELU", "torch.nn.modules.activation.GELU",
        "torch._C._nn.gelu"}
COMPLEX_FUNCS = {"torch.view_as_complex", "torch.polar", "torch.complex"}
COMPLEX_DTYPES = {"torch.complex64", "torch.complex128", "torch.cfloat", "torch.cdouble",
                  "torch.complex32", "torch.chalf"}
FLOAT64_DTYPES = {"torch.float64", "torch.double"}
FACTORIES = {"tensor", "as_tensor", "zeros", "ones", "empty", "full", "arange", "linspace",
             "logspace", "eye", "randn", "rand", "randint", "randperm", "normal", "zeros_like",
             "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "randint_like"}
RNG_FUNCS = {"randn", "rand", "randint", "randperm", "normal", "bernoulli", "multinomial",
             "poisson", "rand_like", "randn_like", "randint_like"}
RNG_INPLACE = {"normal_", "uniform_", "random_", "bernoulli_", "exponential_", "geometric_",
               "log_normal_", "cauchy_"}
DEFAULT_ALIASES = {"F": "torch.nn.functional", "nn": "torch.nn"}

CUDA_STRING = re.compile(r"^cuda(:\d+)?$")
CUDA_ENV = re.compile(r"^(PYTORCH_)?CUDA_(VISIBLE_DEVICES|LAUNCH_BLOCKING|DEVICE_MAX_CONNECTIONS|"
                      r"DEVICE_ORDER|HOME|PATH|MODULE_LOADING|ALLOC_CONF|CACHE_DISABLE)$")
NCCL_ENV = re.compile(r"^NCCL_[A-Z0-9_]+$")


@dataclass
class Finding:
    path: str
    line: int
    col: int
    category: str
    symbol: str
    kind: str
    replacement: str
    source: str
    method: str = "ast"     # "ast" or "regex"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ScanReport:
    findings: list[Finding] = field(default_factory=list)
    files_scanned: int = 0
    regex_fallback: list[str] = field(default_factory=list)   # files that did not parse
    suppressed: int = 0
    skipped: list[str] = field(default_factory=list)          # 'path: why' (not read)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            out[f.category] = out.get(f.category, 0) + 1
        return dict(sorted(out.items()))

    def to_dict(self) -> dict:
        return {"findings": [f.to_dict() for f in self.findings], "counts": self.counts(),
                "files_scanned": self.files_scanned, "regex_fallback": self.regex_fallback,
                "suppressed": self.suppressed, "skipped": self.skipped}


# --- the ast pass -------------------------------------------------------------------------
class _Visitor(ast.NodeVisitor):
    def __init__(self, lines: list[str]):
        self.lines = lines
        self.alias: dict[str, str] = {}
        self.hits: list[tuple[int, int, str, str]] = []   # line, col, category, symbol
        self.docstrings: set[int] = set()
        # names (and object paths) known to hold host tensors in the current function, a
        # little flow-sensitivity: `a = torch.arange(n, dtype=torch.float64)` then `a.double()`
        # stays on the host; `self.sched.set_timesteps(n, device="cpu")` puts self.sched there
        self.host_names: list[set[str]] = [set()]

    # names ------------------------------------------------------------------------------
    def collect_imports(self, tree: ast.AST) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        self.alias[a.asname] = a.name
                    else:
                        top = a.name.split(".")[0]
                        self.alias[top] = top
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    self.alias[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                body = getattr(node, "body", [])
                if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                        and isinstance(body[0].value.value, str):
                    self.docstrings.add(id(body[0].value))

    def resolve(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return self.alias.get(node.id) or DEFAULT_ALIASES.get(node.id) or node.id
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def hit(self, node: ast.AST, category: str, symbol: str) -> None:
        self.hits.append((node.lineno, node.col_offset + 1, category, symbol))

    # classification of a dotted name ------------------------------------------------------
    @staticmethod
    def classify(name: str) -> str | None:
        parts = name.split(".")
        if parts[0] in VENDOR_MODULES:
            return VENDOR_MODULES[parts[0]]
        if parts[:2] == ["torch", "cuda"]:
            if len(parts) == 2:
                return "cuda-api"
            if parts[2] == "amp":
                return "cuda-amp"
            if parts[2] in CUDA_GRAPH:
                return "cuda-graph"
            if parts[2] in CUDA_STREAM:
                return "cuda-stream"
            return "cuda-api"
        if parts[:2] == ["torch", "backends"] and len(parts) > 2 and parts[2] in ("cuda", "cudnn"):
            return "cuda-api"
        if name in ("torch.Tensor.cuda", "torch.nn.Module.cuda"):
            return "cuda-tensor"
        if parts[:3] == ["torch", "utils", "cpp_extension"] and len(parts) > 3 and \
                parts[3] in ("CUDAExtension", "CUDA_HOME"):
            return "cuda-extension"
        if name == "torch.distributed.is_nccl_available":
            return "nccl"
        if name in GELU:
            return "native-gelu"
        if name in COMPLEX_FUNCS or name in COMPLEX_DTYPES:
            return "complex-on-device"
        return None

    # visitors ---------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            cat = self.classify(a.name)
            if cat:
                self.hit(node, cat, f"import {a.name}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if not node.module or node.level:
            return
        cat = self.classify(node.module)
        if cat:
            self.hit(node, cat, f"from {node.module} import ...")
            return
        for a in node.names:
            cat = self.classify(f"{node.module}.{a.name}")
            if cat:
                self.hit(node, cat, f"from {node.module} import {a.name}")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name = self.resolve(node)
        if name is None:            # base is a call / subscript: look inside it
            if node.attr == "is_cuda":
                self.hit(node, "cuda-api", ".is_cuda")
            self.generic_visit(node)
            return
        cat = self.classify(name)
        if cat:
            self.hit(node, cat, name)
        elif node.attr == "is_cuda":
            self.hit(node, "cuda-api", ".is_cuda")
        # a dotted name is one symbol: do not report its prefixes again

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load) and node.id in self.alias:
            cat = self.classify(self.alias[node.id])
            if cat:
                self.hit(node, cat, self.alias[node.id])

    def visit_FunctionDef(self, node) -> None:
        self.host_names.append(set())
        self.generic_visit(node)
        self.host_names.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Assign(self, node: ast.Assign) -> None:
        self.generic_visit(node)
        host = self.on_host(node.value)
        for t in node.targets:
            if isinstance(t, ast.Name):
                (self.host_names[-1].add if host else self.host_names[-1].discard)(t.id)

    def visit_Constant(self, node: ast.Constant) -> None:
        if not isinstance(node.value, str) or id(node) in self.docstrings:
            return
        s = node.value
        if CUDA_STRING.match(s):
            self.hit(node, "cuda-device-string", repr(s))
        elif s.lower() == "nccl" or NCCL_ENV.match(s):
            self.hit(node, "nccl", repr(s))
        elif CUDA_ENV.match(s):
            self.hit(node, "cuda-env", repr(s))
        elif "nvidia-smi" in s:
            self.hit(node, "nvml", repr(s))
        elif s.endswith((".cu", ".cuh")):
            self.hit(node, "cuda-extension", repr(s))

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        first = node.values[0] if node.values else None
        if isinstance(first, ast.Constant) and isinstance(first.value, str) and \
                first.value.startswith("cuda:"):
            self.hit(node, "cuda-device-string", "f'cuda:{...}'")
        for v in node.values:
            if not isinstance(v, ast.Constant):
                self.visit(v)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        fname = self.resolve(func)
        dev_kw = self.kw(node, "device")
        if isinstance(func, ast.Attribute) and dev_kw is not None and self.is_host_device(dev_kw):
            owner = self.resolve(func.value)
            if owner and not owner.startswith("torch"):
                self.host_names[-1].add(owner)
        if isinstance(func, ast.Attribute):
            attr = func.attr
            if attr == "cuda" and not (fname or "").startswith("torch."):
                self.hit(func, "cuda-tensor", ".cuda()")
            elif attr in ("double", "cdouble", "cfloat") and not node.args:
                if attr == "double":
                    if not self.on_host(func.value):
                        self.hit(func, "float64-on-device", ".double()")
                else:
                    self.hit(func, "complex-on-device", f".{attr}()")
            elif attr in ("to", "type"):
                self.check_cast(node, func)
            elif attr in RNG_INPLACE and isinstance(func.value, ast.Call) and \
                    self.is_factory(func.value) and not self.on_host(func.value):
                self.hit(func, "device-rng", f".{attr}() on a device tensor")
        if fname and fname.startswith("torch.") and fname.count(".") == 1:
            short = fname.split(".")[1]
            dev = self.kw(node, "device")
            dtype = self.kw(node, "dtype")
            if short in RNG_FUNCS:
                inherits = short.endswith("_like")
                if (dev is not None and not self.is_host_device(dev)) or (inherits and dev is None):
                    self.hit(node, "device-rng", fname)
            if short == "Generator" and node.args + [k.value for k in node.keywords]:
                d = dev if dev is not None else (node.args[0] if node.args else None)
                if d is not None and not self.is_host_device(d):
                    self.hit(node, "device-rng", "torch.Generator(device=...)")
            if dtype is not None and self.resolve(dtype) in FLOAT64_DTYPES and dev is not None \
                    and not self.is_host_device(dev):
                self.hit(node, "float64-on-device", f"{fname}(dtype=float64, device=...)")
            if short == "set_default_dtype" and node.args and \
                    self.resolve(node.args[0]) in FLOAT64_DTYPES:
                self.hit(node, "float64-on-device", "torch.set_default_dtype(float64)")
        self.generic_visit(node)

    # helpers ----------------------------------------------------------------------------
    @staticmethod
    def kw(node: ast.Call, name: str):
        for k in node.keywords:
            if k.arg == name:
                return k.value
        return None

    def is_host_device(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return isinstance(node.value, str) and node.value.split(":")[0] in ("cpu", "meta")
        if isinstance(node, ast.Call) and self.resolve(node.func) == "torch.device" and node.args:
            return self.is_host_device(node.args[0])
        return False

    def is_factory(self, node: ast.Call) -> bool:
        name = self.resolve(node.func) or ""
        return name.startswith("torch.") and name.split(".", 1)[1] in FACTORIES

    def on_host(self, expr: ast.AST) -> bool:
        """Is this expression's tensor known to be on the host? Follows method chains."""
        while isinstance(expr, ast.Call):
            f = expr.func
            if self.is_factory(expr):
                dev = self.kw(expr, "device")
                return dev is None or self.is_host_device(dev)
            if not isinstance(f, ast.Attribute):
                return False
            if f.attr in ("cpu", "numpy"):
                return True
            if f.attr == "cuda":
                return False
            if f.attr == "to":
                devs = [a for a in expr.args if not self.is_dtype(a)] + \
                       [k.value for k in expr.keywords if k.arg == "device"]
                if devs:
                    return all(self.is_host_device(d) for d in devs)
            if self.resolve(f) == "torch.from_numpy":
                return True
            expr = f.value
        if isinstance(expr, (ast.Name, ast.Attribute)):
            name = self.resolve(expr) if isinstance(expr, ast.Attribute) else expr.id
            return bool(name) and any(name == h or name.startswith(h + ".") for h in self.host_names[-1])
        return False

    def is_dtype(self, node: ast.AST) -> bool:
        name = self.resolve(node) or ""
        return name.startswith("torch.") and (name.split(".")[1].startswith(("float", "bfloat", "int",
                                               "uint", "complex", "double", "half", "bool", "cfloat",
                                               "cdouble", "long", "short")))

    def check_cast(self, node: ast.Call, func: ast.Attribute) -> None:
        vals = list(node.args) + [k.value for k in node.keywords if k.arg == "dtype"]
        names = {self.resolve(v) for v in vals}
        if names & FLOAT64_DTYPES:
            devs = [a for a in node.args if not self.is_dtype(a)] + \
                   [k.value for k in node.keywords if k.arg == "device"]
            host = (devs and all(self.is_host_device(d) for d in devs)) or \
                   (not devs and self.on_host(func.value))
            if not host:
                self.hit(func, "float64-on-device", f".{func.attr}(float64)")
        if names & COMPLEX_DTYPES:
            self.hit(func, "complex-on-device", f".{func.attr}(complex)")


def _scan_python_ast(text: str, tree: ast.AST) -> list[tuple[int, int, str, str]]:
    v = _Visitor(text.splitlines())
    v.collect_imports(tree)
    v.visit(tree)
    return v.hits


# --- the regex fallback ------------------------------------------------------------------
_PY_REGEX = [
    (re.compile(r"\btorch\.cuda\.amp\b"), "cuda-amp"),
    (re.compile(r"\btorch\.cuda\.(CUDAGraph|graph|make_graphed_callables)\b"), "cuda-graph"),
    (re.compile(r"\btorch\.cuda\.(Stream|stream|Event|current_stream|default_stream)\b"), "cuda-stream"),
    (re.compile(r"\btorch\.cuda\.(?!amp\b|CUDAGraph\b|graph\b|make_graphed_callables\b|Stream\b|"
                r"stream\b|Event\b|current_stream\b|default_stream\b)\w+"), "cuda-api"),
    (re.compile(r"\.cuda\("), "cuda-tensor"),
    (re.compile(r"""['"]cuda(:\d+)?['"]|f['"]cuda:\{"""), "cuda-device-string"),
    (re.compile(r"\bflash_attn(_interface)?\b"), "flash-attn"),
    (re.compile(r"^\s*(import|from)\s+apex\b|\bapex\.(normalization|amp|optimizers|contrib)\b"), "apex"),
    (re.compile(r"\btransformer_engine\b"), "transformer-engine"),
    (re.compile(r"\bnatten\b"), "natten"),
    (re.compile(r"\bxformers\b"), "xformers"),
    (re.compile(r"\bpynvml\b|nvidia-smi"), "nvml"),
    (re.compile(r"""['"]nccl['"]|\bNCCL_[A-Z0-9_]+"""), "nccl"),
    (re.compile(r"\bCUDA_(VISIBLE_DEVICES|LAUNCH_BLOCKING|DEVICE_MAX_CONNECTIONS|DEVICE_ORDER)\b"), "cuda-env"),
    (re.compile(r"\btorch\.(float64|double)\b|\.double\(\)"), "float64-on-device"),
    (re.compile(r"\bview_as_complex\b|\btorch\.polar\b|\btorch\.(complex64|complex128|cfloat|cdouble)\b"),
     "complex-on-device"),
    (re.compile(r"\btorch\.(randn|rand|randint|randn_like|rand_like)\(.*device\s*="), "device-rng"),
    (re.compile(r"\bF\.gelu\(|\bnn\.GELU\(|functional\.gelu\("), "native-gelu"),
]
_CONFIG_REGEX = [
    (re.compile(r"\bCUDA_(VISIBLE_DEVICES|LAUNCH_BLOCKING|DEVICE_MAX_CONNECTIONS|DEVICE_ORDER)\b"), "cuda-env"),
    (re.compile(r"\bNCCL_[A-Z0-9_]+|\bnccl\b", re.IGNORECASE), "nccl"),
    (re.compile(r"nvidia-smi|\bpynvml\b"), "nvml"),
    (re.compile(r"""\bdevice\s*[:=]\s*['"]?cuda(:\d+)?\b"""), "cuda-device-string"),
    (re.compile(r"\bflash[_-]attn\b"), "flash-attn"),
]


def _strip_comment(line: str) -> str:
    # good enough for a fallback: a '#' inside a string is rare on the lines we care about
    return line.split("#", 1)[0]


def _scan_regex(lines: list[str], patterns) -> list[tuple[int, int, str, str]]:
    hits = []
    for i, line in enumerate(lines, 1):
        code = _strip_comment(line)
        for pat, cat in patterns:
            m = pat.search(code)
            if m:
                hits.append((i, m.start() + 1, cat, m.group(0).strip()))
    return hits


# --- files and trees ------------------------------------------------------------------------
def _excluded(rel: str, patterns) -> bool:
    parts = Path(rel).parts
    return any(fnmatch.fnmatch(p, pat) for p in parts for pat in patterns) or \
        any(fnmatch.fnmatch(rel, pat) for pat in patterns)


def iter_files(root: Path, exclude=()):
    patterns = tuple(DEFAULT_EXCLUDES) + tuple(exclude)
    if not root.is_dir():      # a file, or something else scan_file will skip with a reason
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = sorted(d for d in dirnames
                             if not _excluded(os.path.normpath(os.path.join(rel_dir, d)), patterns))
        for fn in sorted(filenames):
            rel = os.path.normpath(os.path.join(rel_dir, fn))
            if (fn.endswith(".py") or fn.endswith(CONFIG_SUFFIXES)) and not _excluded(rel, patterns):
                yield Path(dirpath) / fn


SCAN_MAX_BYTES = 8 * 1024**2   # a source file beyond this is skipped (parsing would need GBs)


def scan_file(path: Path, report: ScanReport, display: str | None = None) -> None:
    """Scan one file. A FIFO, device, socket (or a symlink to one) is never opened and a file
    over SCAN_MAX_BYTES is not read: both are listed in report.skipped with the reason."""
    from phyx.errors import InputError
    from phyx.io.untrusted import file_kind, read_bytes

    shown = display or str(path)
    kind = file_kind(path)
    if kind is None and not os.path.lexists(path):
        raise FileNotFoundError(f"cannot read {path}: no such file")
    if kind != "regular file":
        report.skipped.append(f"{shown}: {kind or 'unreadable'}, not a regular file")
        return
    try:
        data = read_bytes(path, "source file", SCAN_MAX_BYTES)
    except InputError as e:
        report.skipped.append(f"{shown}: {str(e).replace(f'source file {path} ', '')}")
        return
    scan_text(data.decode("utf-8", errors="replace"), shown, report, python=path.suffix == ".py")


def scan_text(text: str, display: str, report: ScanReport, python: bool = True) -> None:
    lines = text.splitlines()
    method = "ast"
    if python:
        try:
            hits = _scan_python_ast(text, ast.parse(text, filename=display))
        except (SyntaxError, ValueError, RecursionError, MemoryError):  # too deep for ast: regexes
            hits, method = _scan_regex(lines, _PY_REGEX), "regex"
            report.regex_fallback.append(display)
    else:
        hits, method = _scan_regex(lines, _CONFIG_REGEX), "regex"
    seen = set()
    for line, col, cat, symbol in sorted(hits):
        if (line, cat) in seen:          # one finding per line and category
            continue
        seen.add((line, cat))
        src = lines[line - 1] if 0 < line <= len(lines) else ""
        if any(s in src for s in SUPPRESS):
            report.suppressed += 1
            continue
        c = CATEGORIES[cat]
        report.findings.append(Finding(display, line, col, cat, symbol, c.kind, c.replacement,
                                       src.strip(), method))
    report.files_scanned += 1


def scan_paths(paths, exclude=()) -> ScanReport:
    """Scan files or directories. Paths in findings are relative to each given directory."""
    report = ScanReport()
    for p in paths:
        root = Path(p)
        if not root.exists():
            raise FileNotFoundError(f"no such file or directory: {p}")
        for f in iter_files(root, exclude):
            shown = str(f) if root.is_file() else os.path.join(str(p), os.path.relpath(f, root))
            scan_file(f, report, shown)
    return report


def scan_source(text: str, name: str = "<string>") -> list[Finding]:
    """Scan one Python source string (for tests and tools)."""
    rep = ScanReport()
    scan_text(text, name, rep)
    return rep.findings
