import pytest
from packaging.version import Version

from ceemsnet import CeemsnetError
from ceemsnet.runtime.btf import Signature
from ceemsnet.planning.kernel import compare_signature, normalize_arch, parse_kernel_version


@pytest.mark.parametrize("text,want", [
    ("4.18.0-553.el8_10.x86_64", "4.18.0"),
    ("5.14.0-427.el9.x86_64", "5.14.0"),
    ("5.15.0-91-generic", "5.15.0"),
    ("6.1.0-28-amd64", "6.1.0"),
    ("6.8.0-45-generic", "6.8.0"),
    ("6.12.117+deb12-amd64", "6.12.117"),
    ("6.18.44-fc-v769", "6.18.44"),
    ("7.0.0-31-generic", "7.0.0"),
    ("6.5", "6.5.0"),
    ("v6.9-rc1", "6.9.0"),
    # Ubuntu's /proc/version_signature: the last field is the mainline base
    ("Ubuntu 6.8.0-45.45-generic 6.8.12", "6.8.12"),
])
def test_parse_kernel_version(text, want):
    assert parse_kernel_version(text) == Version(want)


@pytest.mark.parametrize("bad", ["", "   ", "linux", "6", "6.x.1", "abc-6.1", "1.2.3", "6.1000.0"])
def test_parse_kernel_version_rejects(bad):
    with pytest.raises(CeemsnetError):
        parse_kernel_version(bad)


def test_arch_aliases():
    assert normalize_arch("amd64") == "x86_64"
    assert normalize_arch("arm64") == "aarch64"
    with pytest.raises(CeemsnetError, match="unsupported architecture"):
        normalize_arch("riscv64")


SK = ("sk", "struct sock *")
MSG = ("msg", "struct msghdr *")


def test_compare_signature_exact_count_for_fexit():
    five = Signature("int", (SK, MSG, ("len", "size_t"), ("flags", "int"), ("addr_len", "int *")))
    four = Signature("int", (SK, MSG, ("len", "size_t"), ("flags", "int")))
    assert compare_signature(four, four, None) is None
    why = compare_signature(five, four, None)
    assert "4 arguments" in why and "expects 5" in why


def test_compare_signature_positions_for_kprobe():
    five = Signature("int", (SK, MSG, ("len", "size_t"), ("flags", "int"), ("addr_len", "int *")))
    four = Signature("int", (SK, MSG, ("len", "size_t"), ("flags", "int")))
    six = Signature("int", (SK, MSG, ("len", "size_t"), ("nonblock", "int"), ("flags", "int"),
                            ("addr_len", "int *")))
    assert compare_signature(five, four, (0, 3)) is None
    assert "nonblock" in compare_signature(five, six, (0, 3))


def test_compare_signature_return_type():
    a = Signature("int", (SK,))
    b = Signature("struct dentry *", (SK,))
    assert "returns struct dentry *" in compare_signature(a, b, None)
