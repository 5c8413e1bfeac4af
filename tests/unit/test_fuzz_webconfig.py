"""Fuzzing `--web.config.file` (ceemsnet/serving/webconfig.py): every file loads into a WebConfig whose
values the server can use, or is refused with one WebConfigError line, within 10 s.

Inputs are near-valid: documents made of the toolkit's keys with good values, wrong types and the
test PKI's files in every state (missing, a folder, empty, a FIFO, the key where the certificate
goes), dumped as YAML and then mutated as text; and YAML's corners (tags, anchors, timestamps,
unhashable keys, deep nesting)."""

import datetime as dt
import os
import re

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import example, given
from hypothesis import strategies as st

from ceemsnet.serving import webconfig
from ceemsnet.serving.webconfig import WebConfigError

from .conftest import examples, tally, within

HASH = "$2b$04$J3Q1wB0Gvxe2VUtQ0eC9J.tCRcP7Kn8bOlk3mOqd0j1QdD3nG2aKy"  # shape only: never checked here


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, key, issuer_key, ca):
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name("fuzz CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256()))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{kind: path} of the files a config may name, and the PEM texts as "inline:<name>"."""
    d = tmp_path_factory.mktemp("fuzzpki")
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    pem = {
        "ca.pem": _cert("fuzz CA", ca_key, ca_key, True).public_bytes(serialization.Encoding.PEM),
        "server.pem": _cert("server", key, ca_key, False).public_bytes(serialization.Encoding.PEM),
        "server.key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()),
        "empty": b"",
        "garbage": b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
        "binary": bytes(range(256)),
    }
    out = {}
    for name, data in pem.items():
        (d / name).write_bytes(data)
        out[name] = str(d / name)
        out["inline:" + name] = data.decode("latin-1")
    (d / "dir").mkdir()
    out["dir"] = str(d / "dir")
    os.mkfifo(d / "fifo")  # no writer: opening it for reading blocks
    out["fifo"] = str(d / "fifo")
    out["missing"] = str(d / "missing.pem")
    out["relative"] = "server.pem"  # relative to the config file's folder (not the PKI's)
    out["nul"] = str(d / "server.pem") + "\0x"
    out["dir_path"] = str(d)
    return out


# --- the documents ------------------------------------------------------------------------------------------

JUNK = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70), st.floats(),
                 st.text(max_size=12), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
                 st.sampled_from([10**400, "", " ", "\0", "\ud800", "é", "a\r\nb: c", "0", "1s", "TLS12"]))


def _or_junk(good):
    return st.one_of(good, good, good, JUNK)


def _file(kind_names):
    return st.sampled_from(kind_names)


FILE_KINDS = ["ca.pem", "server.pem", "server.key", "empty", "garbage", "binary", "dir", "fifo", "missing",
              "relative", "nul", "dir_path"]
INLINE_KINDS = ["inline:" + k for k in ("ca.pem", "server.pem", "server.key", "empty", "garbage", "binary")]

TLS_VALUES = {
    "cert_file": _file(FILE_KINDS), "key_file": _file(FILE_KINDS), "client_ca_file": _file(FILE_KINDS),
    "cert": _file(INLINE_KINDS), "key": _file(INLINE_KINDS), "client_ca": _file(INLINE_KINDS),
    "client_auth_type": st.sampled_from(list(webconfig.CLIENT_AUTH) + ["Always", ""]),
    "client_allowed_sans": st.lists(st.sampled_from(["127.0.0.1", "::1", "client.test", "0:0::1", "", "é"]),
                                    max_size=3),
    "min_version": st.sampled_from(list(webconfig.TLS_VERSIONS) + ["TLS14", ""]),
    "max_version": st.sampled_from(list(webconfig.TLS_VERSIONS) + ["tls13"]),
    "cipher_suites": st.lists(st.sampled_from(list(webconfig.GO_CIPHERS) + list(webconfig.GO_TLS13_CIPHERS)
                                              + ["ECDHE-RSA-AES128-GCM-SHA256"]), max_size=3),
    "prefer_server_cipher_suites": st.booleans(),
    "curve_preferences": st.lists(st.sampled_from(list(webconfig.GO_CURVES) + ["Curve25519"]), max_size=2),
}
HEADER_VALUES = st.one_of(st.sampled_from(["nosniff", "deny", "sameorigin", "max-age=31536000", "", "DENY"]),
                          st.text(max_size=10))
HTTP_VALUES = {
    "http2": st.booleans(),
    "headers": st.dictionaries(st.sampled_from(list(webconfig.HEADERS) + ["Server", "x-frame-options"]),
                               _or_junk(HEADER_VALUES), max_size=3),
}
DURATIONS = st.one_of(st.sampled_from(["1s", "500ms", "1m30s", "0", "1.5h", ".5s", "1µs", "2us", "1 second", "-1s",
                                       "1" * 30 + "h", "s", "1d"]),
                      st.integers(min_value=-2**80, max_value=2**80))
RATE_VALUES = {"interval": DURATIONS, "burst": st.integers(min_value=-5, max_value=2**1100)}
USERS = st.dictionaries(st.one_of(st.text(max_size=6), st.integers()),
                        _or_junk(st.sampled_from([HASH, HASH[:-1], HASH.replace("$04$", "$99$"),
                                                  HASH.replace("$2b$", "$2$"), "s3cret"])), max_size=3)


SECTIONS = {"tls_server_config": TLS_VALUES, "http_server_config": HTTP_VALUES, "rate_limit": RATE_VALUES}
# working configurations; each example starts from one and changes a few values
BASES = [
    {},
    {"tls_server_config": {"cert_file": "server.pem", "key_file": "server.key"}},
    {"tls_server_config": {"cert": "inline:server.pem", "key": "inline:server.key", "min_version": "TLS13"}},
    {"tls_server_config": {"cert_file": "server.pem", "key_file": "server.key", "client_ca_file": "ca.pem",
                           "client_auth_type": "RequireAndVerifyClientCert", "client_allowed_sans": ["::1"],
                           "cipher_suites": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
                           "prefer_server_cipher_suites": False, "max_version": "TLS12"}},
    {"http_server_config": {"http2": False, "headers": {"X-Frame-Options": "deny", "Strict-Transport-Security":
                                                        "max-age=31536000"}},
     "basic_auth_users": {"alice": HASH, "bob": HASH}, "rate_limit": {"interval": "1s", "burst": 5}},
]


@st.composite
def documents(draw):
    """A working configuration with up to 4 changes: a value replaced (by another of its kind, or a wrong
    type), a key removed, an unknown key or section added."""
    doc = {k: dict(v) for k, v in draw(st.sampled_from(BASES)).items()}
    for _ in range(draw(st.integers(0, 4))):
        top = draw(st.sampled_from(["tls_server_config"] * 6 + ["http_server_config"] * 3
                                   + ["basic_auth_users", "rate_limit"] * 2 + ["tls_server_confg"]))
        how = draw(st.sampled_from(("set",) * 8 + ("remove", "remove", "unknown", "whole")))
        sec = doc.get(top)
        if how == "whole" or top not in SECTIONS and top != "basic_auth_users" or not isinstance(sec, dict):
            doc[top] = draw(JUNK if top not in SECTIONS else st.one_of(JUNK, st.just({})))
        elif top == "basic_auth_users":
            doc[top] = draw(USERS) if how != "remove" else None
        elif how == "remove" and sec:
            del sec[draw(st.sampled_from(sorted(sec)))]
        elif how == "unknown":
            sec[draw(st.sampled_from(["certfile", "Cert_File", "unknown", ""]))] = draw(JUNK)
        else:
            k = draw(st.sampled_from(sorted(SECTIONS[top])))
            sec[k] = draw(_or_junk(SECTIONS[top][k]))
    return doc


DOCUMENT = documents()


@st.composite
def tls_documents(draw):
    """A working tls_server_config with 1 to 3 of its values replaced by others of their kind."""
    tls = dict(draw(st.sampled_from([b["tls_server_config"] for b in BASES if "tls_server_config" in b])))
    for _ in range(draw(st.integers(1, 3))):
        k = draw(st.sampled_from(sorted(TLS_VALUES)))
        tls[k] = draw(TLS_VALUES[k])
        twin = TWINS.get(k)
        if twin and draw(st.integers(0, 3)):  # mostly: the file or the inline text, not both
            tls.pop(twin, None)
        if k.startswith("client_ca") and draw(st.integers(0, 3)):  # mostly with the policy that needs it
            tls["client_auth_type"] = "RequireAndVerifyClientCert"
    return {"tls_server_config": tls}


TWINS = {"cert": "cert_file", "key": "key_file", "client_ca": "client_ca_file"}
TWINS.update({v: k for k, v in TWINS.items()})

# YAML's corners, each a whole document or a value spliced into one
CORNERS = [
    "? [a]\n: b\n", "basic_auth_users: {? [x] : y}\n", "basic_auth_users: {a: 2001-13-45}\n",
    "a: !!float abc\n", "http_server_config: {headers: {X-Frame-Options: !!int 0x_}}\n",
    "rate_limit: {interval: !!binary aaa}\n", "rate_limit: {interval: 2001-01-01 00:00:00 +99:00}\n",
    "x: &a [*a]\n", "x: *nope\n", "a: \x00\n", "a: \ufeffb\n", "!!python/object:os.system {}\n",
    "basic_auth_users: !!set {a}\n", "- a\n", "a: b\na: c\n", "{a: 1, a: 2}\n", "'\n", "%YAML 9.9\n---\n",
    "---\n...\n---\n", "tls_server_config: !!omap [a: b]\n", "[" * 600 + "]" * 600, "{a: " * 600 + "}" * 600,
    "rate_limit: {interval: 1" + "0" * 400 + "}\n", "rate_limit: {interval: 1s, burst: 1" + "0" * 400 + "}\n",
]
MUTATION_CHARS = st.sampled_from(list(":{}[]-?&*!|>'\"%@`#,\n\t \\\0é\ud800") + [
    "\r\n", "  ", "!!binary ", "!!float ", "!!int ", "!!bool ", "!!timestamp ", "!!set ", "!!str "])


@st.composite
def mutated(draw, texts):
    """One of `texts`, with up to 3 edits: a character inserted, a span deleted or duplicated."""
    text = draw(texts)
    for _ in range(draw(st.integers(0, 3))):
        if not text:
            break
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 8)))
        how = draw(st.sampled_from(("insert", "delete", "duplicate", "replace")))
        if how == "insert":
            text = text[:i] + draw(MUTATION_CHARS) + text[i:]
        elif how == "delete":
            text = text[:i] + text[j:]
        elif how == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        else:
            text = text[:i] + draw(MUTATION_CHARS) + text[j:]
    return text


def _dump(doc, files) -> str:
    def resolve(v):
        if isinstance(v, dict):
            return {k: resolve(x) for k, x in v.items()}
        if isinstance(v, list):
            return [resolve(x) for x in v]
        if isinstance(v, str) and v in files:
            return files[v]
        return v
    return yaml.safe_dump(resolve(doc), allow_unicode=True, sort_keys=False)


# --- the property ---------------------------------------------------------------------------------------------

_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _check(text: str, tmp_dir) -> None:
    path = os.path.join(tmp_dir, "web.yml")
    with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write(text)
    try:
        with within(10, "loading the web config"):
            cfg = webconfig.load(path, warn=False)
    except WebConfigError as e:
        msg = str(e)
        assert msg.startswith(f"--web.config.file {path}: ") and "\n" not in msg and "\r" not in msg, msg
        tally("refused: " + re.sub(r"'[^']*'|\S*/\S*|\(.*", "_", msg[len(path) + 20:])[:50])
        return
    tally("loaded: " + cfg.summary())
    # loaded: every value is one the server can use as it is
    for k, v in cfg.headers.items():
        assert k in webconfig.HEADERS and v
        v.encode("latin-1")  # wsgiref sends headers in Latin-1
        assert not _CTL.search(v), f"header {k}: {v!r}"
    for user, h in cfg.users.items():
        assert isinstance(user, str) and webconfig._BCRYPT.fullmatch(h.decode())
    if cfg.limiter is not None:
        assert cfg.limiter.interval > 0 and cfg.limiter.burst >= 0
        cfg.limiter.allow()
    assert cfg.files[0] == path and len(cfg.files) == len(cfg.signature)
    cfg.summary()


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("webconfig"))


@examples(200)
@given(doc=DOCUMENT, data=st.data())
def test_fuzz_web_config_documents(files, tmp_dir, doc, data):
    text = _dump(doc, files)
    if data.draw(st.integers(0, 3), "mutate") == 0:
        text = data.draw(mutated(st.just(text)), "mutated")
    _check(text, tmp_dir)


@examples(150)
@given(doc=tls_documents())
def test_fuzz_web_config_tls(files, tmp_dir, doc):
    _check(_dump(doc, files), tmp_dir)


@examples(60)
@given(text=mutated(st.sampled_from(CORNERS)))
@example(text="? [a]\n: b\n")  # a list as a key: TypeError (unhashable) in the duplicate-key check
@example(text="basic_auth_users: {a: 2001-13-45}\n")  # a timestamp PyYAML cannot build: ValueError
@example(text="a: !!float abc\n")  # ValueError from PyYAML's constructor
@example(text="a: !!float\n")  # IndexError (found by the long profile)
@example(text="a: !!bool x\n")  # KeyError
@example(text="a: !!timestamp x\n")  # AttributeError
@example(text="[" * 600 + "]" * 600)  # RecursionError in PyYAML's composer
@example(text="a: \x00\n")  # PyYAML's ReaderError prints on two lines
@example(text="rate_limit: {interval: 1s, burst: 1" + "0" * 400 + "}\n")  # OverflowError: float(burst)
@example(text="rate_limit: {interval: 1" + "0" * 400 + "}\n")  # OverflowError: nanoseconds * 1e-9
def test_fuzz_web_config_yaml_corners(tmp_dir, text):
    _check(text, tmp_dir)


# found by the properties above, kept as plain regressions with the file kinds they need
@pytest.mark.parametrize("tls", [
    {"cert_file": "nul", "key_file": "server.key"},  # ValueError: embedded null byte (stat, open)
    {"cert": "\ud800", "key": "inline:server.key"},  # UnicodeEncodeError writing the inline PEM
    {"cert": "inline:server.pem", "key": "inline:server.key", "client_ca": "é",
     "client_auth_type": "RequireAndVerifyClientCert"},  # TypeError: cadata must be ASCII
    {"cert_file": "fifo", "key_file": "server.key"},  # open() of a FIFO with no writer blocks for ever
])
def test_tls_file_and_inline_regressions(files, tmp_dir, tls):
    _check(_dump({"tls_server_config": tls}, files), tmp_dir)


@pytest.mark.parametrize("value", ["a\r\nSet-Cookie: x=1", "\u2603", "x\0y"])
def test_header_values_the_server_cannot_send_are_refused(tmp_dir, value):
    text = yaml.safe_dump({"http_server_config": {"headers": {"Content-Security-Policy": value}}})
    _check(text, tmp_dir)
    with pytest.raises(WebConfigError, match="Content-Security-Policy"):
        webconfig.load(os.path.join(tmp_dir, "web.yml"))
