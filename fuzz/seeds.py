#!/usr/bin/env python3
"""Writes the seed corpus under fuzz/corpus/<target>/ (small, hand-picked real-world inputs).

Run from anywhere: python3 fuzz/seeds.py. Needs the `zstd` and `siftool` commands for the layer
and SIF seeds (both installed by scripts/install-test-deps.sh). The unmunge seeds are outputs
captured from a real munged (`unmunge --numeric --keys=status,uid`), kept verbatim here.
"""
import base64, gzip, hashlib, hmac, io, json, os, shutil, subprocess, tarfile, tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
D1 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
D2 = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
D512 = "sha512:" + hashlib.sha512(b"x").hexdigest()
OCI_M = "application/vnd.oci.image.manifest.v1+json"
OCI_I = "application/vnd.oci.image.index.v1+json"
DK_M = "application/vnd.docker.distribution.manifest.v2+json"
DK_L = "application/vnd.docker.distribution.manifest.list.v2+json"


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def manifests():
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D1, "size": 0}
    oci = {"schemaVersion": 2, "mediaType": OCI_M,
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D2, "size": 2},
           "layers": [layer, dict(layer)], "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}}
    put("manifest", "oci-image", OCI_M + "\n" + json.dumps(oci, indent=3))
    put("manifest", "oci-image-no-header", "\n" + json.dumps(oci))
    art = {"schemaVersion": 2, "mediaType": OCI_M, "artifactType": "application/vnd.example.sbom",
           "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": D1, "size": 2, "data": "e30="},
           "layers": [{"mediaType": "application/spdx+json", "digest": D512, "size": 10}],
           "subject": {"mediaType": OCI_M, "digest": D2, "size": 100}}
    put("manifest", "oci-artifact-subject", OCI_M + "; charset=utf-8\n" + json.dumps(art))
    idx = {"schemaVersion": 2, "mediaType": OCI_I, "manifests": [
        {"mediaType": OCI_M, "digest": D1, "size": 7, "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": OCI_M, "digest": D2, "size": 9, "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}]}
    put("manifest", "oci-index", OCI_I + "\n" + json.dumps(idx))
    dk = {"schemaVersion": 2, "mediaType": DK_M,
          "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": D2, "size": 1469},
          "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": D1, "size": 2},
                     {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": D2, "size": 5,
                      "urls": ["https://example.com/x"]}]}
    put("manifest", "docker-v2", DK_M + "\n" + json.dumps(dk))
    dl = {"schemaVersion": 2, "mediaType": DK_L, "manifests": [
        {"mediaType": DK_M, "digest": D1, "size": 528, "platform": {"architecture": "ppc64le", "os": "linux"}}]}
    put("manifest", "docker-list", "\n" + json.dumps(dl))
    put("manifest", "schema1", "application/vnd.docker.distribution.manifest.v1+prettyjws\n"
        '{"schemaVersion":1,"name":"a/b","tag":"1","fsLayers":[{"blobSum":"' + D1 + '"}],"signatures":[]}')
    put("manifest", "nondistributable", "\n" + json.dumps({"schemaVersion": 2, "mediaType": OCI_M,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D2, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "digest": D1, "size": 9}]}))


def names():
    for i, s in enumerate(["alice/pytorch", "library/busybox", "a.b_c__d---e/f0/g", "v1.2-rc_3", "_x", D1, D512,
                           "md5:abc", "alice/x/manifests/latest", "alice/x/blobs/" + D1, "alice/x/blobs/uploads/",
                           "alice/x/blobs/uploads/0f1e2d3c-aaaa-bbbb", "alice/x/tags/list", "_catalog",
                           "alice/x/referrers/" + D2, "a/../b", "Alice//x"]):
        put("names", "n%02d" % i, s)


def ranges():
    le = lambda n: n.to_bytes(8, "little")
    for i, (size, v) in enumerate([(100, "bytes=0-9"), (100, "bytes=90-"), (100, "bytes=-10"), (100, "bytes=0-1,5-6"),
                                   (0, "bytes=-1"), (2**64 - 1, "bytes=18446744073709551614-"), (100, "bytes 0-99/100"),
                                   (100, "0-1023"), (100, "bytes=5-3"), (100, " bytes = 1 - 2 ")]):
        put("range", "r%02d" % i, le(size) + v.encode())


def queries():
    for i, q in enumerate(["service=hpc-registry&scope=repository:alice/x:pull,push",
                           "service=hpc-registry&scope=repository%3Aa%2Fb%3Apull%2Cpush&scope=registry:catalog:*",
                           "scope=a+b&scope=%zz&scope=%4&scope=100%", "account=alice&client_id=docker&offline_token=true",
                           "last=alice%2Fx&n=100", "users%2Falice%2Ftokens", "&&==&scope&=x"]):
        put("query", "q%02d" % i, q)


def jwts():
    key = bytes([7] * 32)  # FUZZ_KEY in src/fuzzing.rs
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
    header = json.dumps({"alg": "HS256", "typ": "JWT"}).encode()
    claims = {"iss": "hpc-registry", "sub": "alice", "aud": "hpc-registry", "exp": 1700000300, "nbf": 1700000000,
              "iat": 1700000000, "jti": "j1", "amr": "password",
              "access": [{"type": "repository", "name": "alice/x", "actions": ["pull", "push"]}]}
    payload = json.dumps(claims).encode()
    si = enc(header) + b"." + enc(payload)
    put("jwt", "signed-token", si + b"." + enc(hmac.new(key, si, hashlib.sha256).digest()))
    put("jwt", "alg-none", enc(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + b"." + enc(payload) + b".")
    put("jwt", "parts-valid", header + b"\0" + payload)
    expired = dict(claims, exp=1600000000)
    put("jwt", "parts-expired", header + b"\0" + json.dumps(expired).encode())
    put("jwt", "parts-other-aud", header + b"\0" + json.dumps(dict(claims, aud="x")).encode())
    put("jwt", "parts-alg-rs256", json.dumps({"alg": "RS256", "typ": "JWT"}).encode() + b"\0" + payload)


def unmunge():
    put("unmunge", "ok", "STATUS:          0\nUID:             0\n")
    put("unmunge", "replayed", "STATUS:          17\nUID:             0\n")
    put("unmunge", "full", "STATUS:          0\nENCODE_HOST:     127.0.0.1\nENCODE_TIME:     1796190793\n"
        "DECODE_TIME:     1796190793\nTTL:             300\nCIPHER:          4\nMAC:             5\nZIP:             0\n"
        "UID:             1000\nGID:             1000\nLENGTH:          0\n\n")
    put("unmunge", "empty", "")
    put("unmunge", "credential", "MUNGE:AwQFAAAXbuW3qJRTFq3wB9Td+1i+L9+cPj1mvbWa7f7F/mJdQzQ+9daRmBJ19h1vugpcbYoHVWqVMcKkMZz"
        "tcMibaaZaE/ta7DSv4w5FsXVR75y4nGZfzgSb5UjmYK2tpMAYGys=:")


def tar_bytes(build, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        build(t)
    data = buf.getvalue()
    # Keep the two end-of-archive blocks, drop tarfile's padding to a 10 KiB record.
    end = len(data)
    while end >= 1024 and data[end - 512:end] == bytes(512) and data[end - 1024:end - 512] == bytes(512):
        end -= 512
    return data[:end + 512]


def add(t, name, kind=tarfile.REGTYPE, data=b"", mode=0o644, linkname="", pax=None, **kw):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.linkname, ti.mtime = kind, mode, linkname, 1700000000
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    for k, v in kw.items():
        setattr(ti, k, v)
    if pax:
        ti.pax_headers = pax
    t.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def layers():
    def base(t):
        add(t, "etc", tarfile.DIRTYPE, mode=0o755)
        add(t, "etc/hosts", data=b"127.0.0.1 localhost\n")
        add(t, "bin", tarfile.DIRTYPE, mode=0o755)
        add(t, "bin/busybox", data=b"\x7fELF" + bytes(60), mode=0o4755, uid=0, gid=0)
        add(t, "bin/sh", tarfile.SYMTYPE, linkname="busybox", mode=0o777)
        add(t, "bin/ls", tarfile.LNKTYPE, linkname="bin/busybox")
        add(t, "dev", tarfile.DIRTYPE, mode=0o755)
        add(t, "dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3)
        add(t, "dev/sda", tarfile.BLKTYPE, mode=0o660, devmajor=8, devminor=0)
        add(t, "run/fifo", tarfile.FIFOTYPE, mode=0o600)
        add(t, "usr/lib/x", data=b"xattr", pax={"SCHILY.xattr.user.test": "v", "SCHILY.xattr.security.selinux": "s"})
        add(t, "lib", tarfile.SYMTYPE, linkname="/usr/lib")
        add(t, "lib/through-symlink", data=b"y")

    def whiteouts(t):
        add(t, "etc/.wh.hosts")
        add(t, "bin/.wh..wh..opq")
        add(t, "bin/new", data=b"n")
        add(t, "../../escape", data=b"clamped")
        add(t, "/abs/./x/../y", data=b"cleaned")
        add(t, "./", tarfile.DIRTYPE, mode=0o700)

    def gnu_long(t):
        add(t, "d/" + "a" * 200 + "/" + "b" * 150, data=b"long")
        add(t, "l", tarfile.SYMTYPE, linkname="t" * 300)

    plain = tar_bytes(base)
    wh = tar_bytes(whiteouts)
    gnu = tar_bytes(gnu_long, tarfile.GNU_FORMAT)
    put("layer", "tar", b"\0" + plain)
    put("layer", "tar-unlabelled", b"\3" + wh)
    put("layer", "gnu-longnames", b"\0" + gnu)
    put("layer", "tar-gzip", b"\1" + gzip.compress(plain, mtime=0))
    zst = subprocess.run(["zstd", "-q", "-c", "-19"], input=plain, stdout=subprocess.PIPE, check=True).stdout
    put("layer", "tar-zstd", b"\2" + zst)
    # Mode bit 2: two layers, split after (mode >> 3) * 512 bytes.
    n = len(plain) // 512
    assert n < 32, "base layer too long for the split encoding"
    put("layer", "two-layers", bytes([(n << 3) | 4]) + plain + wh)
    put("layer", "gzip-labelled-plain", b"\1" + gnu)


def sifs():
    with tempfile.TemporaryDirectory() as d:
        run = lambda *a: subprocess.run(["siftool", *a], cwd=d, check=True, stdout=subprocess.DEVNULL)
        open(os.path.join(d, "rootfs"), "wb").write(b"hsqs" + bytes(8))
        open(os.path.join(d, "def"), "w").write("bootstrap: docker\nfrom: busybox\n")
        run("new", "one.sif")
        run("add", "--datatype", "4", "--parttype", "2", "--partfs", "1", "--partarch", "2", "one.sif", "rootfs")
        run("new", "three.sif")
        run("add", "--datatype", "1", "three.sif", "def")
        run("add", "--datatype", "4", "--parttype", "2", "--partfs", "1", "--partarch", "4", "three.sif", "rootfs")
        run("add", "--datatype", "6", "--groupid", "1", "--link", "2", "three.sif", "def")
        for name in ["one.sif", "three.sif"]:
            data = open(os.path.join(d, name), "rb").read()
            put("sif", name, data)
        # Header and descriptor table only (the reader never looks further).
        put("sif", "three-table-only.sif", data[:4096 + 3 * 585])


if __name__ == "__main__":
    shutil.rmtree(ROOT, ignore_errors=True)
    for f in [manifests, names, ranges, queries, jwts, unmunge, layers, sifs]:
        f()
