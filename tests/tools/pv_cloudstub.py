#!/usr/bin/env python3
"""pv_cloudstub.py - stand-ins for the cloud identity endpoints, written for podvault's tests,
and a checking proxy in front of an S3 server. Listens on 127.0.0.1 only.

  pv_cloudstub.py --target 127.0.0.1:7480 --access-key K --secret-key S [options]

Endpoints (one port; an S3 bucket cannot be named "latest", "metadata" or "v1"):
  POST /                        AWS STS AssumeRoleWithWebIdentity (form body). The
                                WebIdentityToken must equal the content of --jwt-file at the
                                time of the call; --refuse-role ARN answers AccessDenied.
  PUT  /latest/api/token        EC2 IMDSv2 session token (needs the TTL header);
  GET  /latest/meta-data/iam/security-credentials/[ROLE]   only with that token.
  GET  /v1/credentials          EKS Pod Identity: Authorization must equal --pod-token.
  POST /<tenant>/oauth2/v2.0/token   Microsoft Entra ID: client_secret (--client-secret) or
                                client_assertion (the content of --assertion-file at the time
                                of the call); scope https://storage.azure.com/.default.
  GET  /metadata/identity/oauth2/token   Azure managed identity (needs "Metadata: true").
  anything else                 S3, forwarded to --target unchanged.

Every set of AWS credentials it hands out is (--access-key, --secret-key) with a fresh session
token that expires --lifetime seconds later. Ceph RGW accepts and ignores a session token it did
not issue, so the proxy checks it: with --require-token, every S3 request must carry an
x-amz-security-token that this stub handed out, that has not expired, and that is among the
SignedHeaders of its Authorization; otherwise it answers 400 ExpiredToken or 403 InvalidToken
itself and the request never reaches the server. --bucket-region R answers, as AWS does,
requests signed for another region: 301 with x-amz-bucket-region for HEAD, 400
AuthorizationHeaderMalformed naming the region otherwise. --delay-ms holds every answer to an
S3 PUT back (a long backup, a quick restore). --stats FILE is rewritten (JSON) after every request. Prints "listening 127.0.0.1:PORT"
once ready; SIGTERM stops it.
"""
import argparse
import base64
import http.client
import json
import os
import re
import secrets
import signal
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

A = None
LOCK = threading.Lock()
TOKENS = {}  # session token -> expiry (epoch seconds)
IMDS_TOKENS = set()
STATS = {"sts": 0, "sts_refused": 0, "imds": 0, "pod": 0, "entra": 0, "msi": 0, "issued": 0,
         "s3": 0, "s3_with_token": 0, "s3_rejected": 0, "tokens_used": [], "redirects": 0,
         "errors": []}


def bump(key, note=None):
    with LOCK:
        STATS[key] += 1
        if note:
            STATS["errors"].append(note)
        if A.stats:
            with open(A.stats + ".tmp", "w") as f:
                json.dump(STATS, f)
            os.replace(A.stats + ".tmp", A.stats)


def issue():
    tok = "pvstub-" + secrets.token_hex(24)
    exp = time.time() + A.lifetime
    with LOCK:
        TOKENS[tok] = exp
    bump("issued")
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))
    return tok, iso


def azure_token(prefix):
    """A token handed out: opaque ("entra-<hex>"), or with --jwt an unsigned JWT whose claims are
    those Azurite's BlobTokenAuthenticator checks: aud https://storage.azure.com, iss under
    https://sts.windows.net/, nbf and exp (--lifetime seconds from now)."""
    if not A.jwt:
        return prefix + secrets.token_hex(16)
    now = int(time.time())
    b64 = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    claims = {"aud": "https://storage.azure.com", "iss": f"https://sts.windows.net/{A.tenant}/",
              "nbf": now - 60, "iat": now, "exp": now + A.lifetime, "jti": secrets.token_hex(8)}
    return b64({"typ": "JWT", "alg": "RS256"}) + "." + b64(claims) + "." + secrets.token_hex(32)


def read_file(path):
    with open(path) as f:
        return f.read().strip()


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def answer(self, status, body=b"", ctype="application/json", extra=()):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    # ---- AWS STS ----
    def sts(self, raw):
        form = urllib.parse.parse_qs(raw.decode(), keep_blank_values=True)
        g = lambda k: (form.get(k) or [""])[0]
        bump("sts")

        def refuse(status, code, msg):
            bump("sts_refused")
            self.answer(status, "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
                        f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{msg}</Message>"
                        "</Error><RequestId>x</RequestId></ErrorResponse>", "text/xml")

        if g("Action") != "AssumeRoleWithWebIdentity" or g("Version") != "2011-06-15":
            return refuse(400, "InvalidAction", "only AssumeRoleWithWebIdentity 2011-06-15")
        if not g("RoleSessionName") or not g("RoleArn"):
            return refuse(400, "ValidationError", "RoleArn and RoleSessionName are required")
        if not A.jwt_file or g("WebIdentityToken") != read_file(A.jwt_file):
            return refuse(400, "InvalidIdentityToken", "the web identity token is not the one issued")
        if g("RoleArn") in (A.refuse_role or []):
            return refuse(403, "AccessDenied",
                          "Not authorized to perform sts:AssumeRoleWithWebIdentity")
        tok, exp = issue()
        self.answer(200, "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
                    "<AssumeRoleWithWebIdentityResult><Credentials>"
                    f"<AccessKeyId>{A.access_key}</AccessKeyId>"
                    f"<SecretAccessKey>{A.secret_key}</SecretAccessKey>"
                    f"<SessionToken>{tok}</SessionToken><Expiration>{exp}</Expiration>"
                    "</Credentials><SubjectFromWebIdentityToken>system:serviceaccount:x:y"
                    "</SubjectFromWebIdentityToken></AssumeRoleWithWebIdentityResult>"
                    "</AssumeRoleWithWebIdentityResponse>", "text/xml")

    def aws_json(self):
        tok, exp = issue()
        return json.dumps({"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": A.access_key,
                           "SecretAccessKey": A.secret_key, "Token": tok, "Expiration": exp})

    # ---- IMDSv2 ----
    def imds_token(self):
        if not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return self.answer(400, "missing TTL header", "text/plain")
        t = secrets.token_hex(16)
        with LOCK:
            IMDS_TOKENS.add(t)
        self.answer(200, t, "text/plain")

    def imds_get(self, path):
        with LOCK:
            ok = self.headers.get("X-aws-ec2-metadata-token") in IMDS_TOKENS
        if not ok:
            return self.answer(401, "", "text/plain")
        base = "/latest/meta-data/iam/security-credentials/"
        if path == base:
            return self.answer(200, A.imds_role, "text/plain")
        if path == base + A.imds_role:
            bump("imds")
            return self.answer(200, self.aws_json())
        self.answer(404, "", "text/plain")

    # ---- Entra ID and managed identity ----
    def entra(self, tenant, raw):
        form = urllib.parse.parse_qs(raw.decode(), keep_blank_values=True)
        g = lambda k: (form.get(k) or [""])[0]

        def refuse(code, desc):
            self.answer(400 if code != "invalid_client" else 401,
                        json.dumps({"error": code, "error_description": desc}))

        if tenant != A.tenant:
            return refuse("invalid_request", f"AADSTS90002: Tenant '{tenant}' not found.")
        if g("grant_type") != "client_credentials" or g("scope") != "https://storage.azure.com/.default":
            return refuse("invalid_request", "bad grant_type or scope")
        if g("client_id") != A.client_id:
            return refuse("unauthorized_client", f"AADSTS700016: Application '{g('client_id')}' not found")
        if g("client_secret"):
            if g("client_secret") != A.client_secret:
                return refuse("invalid_client", "AADSTS7000215: Invalid client secret provided.")
        elif g("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            if not A.assertion_file or g("client_assertion") != read_file(A.assertion_file):
                return refuse("invalid_client", "AADSTS700024: Client assertion is not within its valid time range.")
        else:
            return refuse("invalid_request", "no client_secret or client_assertion")
        bump("entra")
        self.answer(200, json.dumps({"token_type": "Bearer", "expires_in": A.lifetime,
                                     "ext_expires_in": A.lifetime,
                                     "access_token": azure_token("entra-")}))

    def msi(self, query):
        if self.headers.get("Metadata") != "true":
            return self.answer(400, json.dumps({"error": "invalid_request",
                                                "error_description": "Required metadata header not specified"}))
        q = urllib.parse.parse_qs(query)
        if (q.get("resource") or [""])[0] != "https://storage.azure.com/" or not q.get("api-version"):
            return self.answer(400, json.dumps({"error": "invalid_resource",
                                                "error_description": "bad resource"}))
        bump("msi")
        now = int(time.time())
        self.answer(200, json.dumps({"access_token": azure_token("msi-"),
                                     "expires_in": str(A.lifetime),
                                     "expires_on": str(now + A.lifetime),
                                     "resource": "https://storage.azure.com/",
                                     "token_type": "Bearer"}))

    # ---- S3 ----
    def s3_error(self, status, code, msg, extra=(), more=""):
        bump("s3_rejected", f"{code}: {msg}")
        self.answer(status, f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>"
                    f"<Message>{msg}</Message>{more}</Error>", "application/xml", extra)

    def s3_check(self):
        auth = self.headers.get("Authorization") or ""
        m = re.search(r"Credential=[^/]+/\d+/([^/]+)/s3/aws4_request", auth)
        if A.bucket_region and m and m.group(1) != A.bucket_region:
            bump("redirects")
            if self.command == "HEAD":
                self.answer(301, b"", "application/xml", [("x-amz-bucket-region", A.bucket_region)])
            else:
                self.s3_error(400, "AuthorizationHeaderMalformed",
                              f"the region '{m.group(1)}' is wrong; expecting '{A.bucket_region}'",
                              more=f"<Region>{A.bucket_region}</Region>")
            return False
        tok = self.headers.get("x-amz-security-token")
        if tok is None:
            if A.require_token:
                self.s3_error(403, "InvalidToken", "no x-amz-security-token")
                return False
            return True
        m = re.search(r"SignedHeaders=([^,]+)", auth)
        if not m or "x-amz-security-token" not in m.group(1).split(";"):
            self.s3_error(403, "InvalidToken", "x-amz-security-token is not signed")
            return False
        with LOCK:
            exp = TOKENS.get(tok)
            if exp is not None and tok not in STATS["tokens_used"]:
                STATS["tokens_used"].append(tok)
        if exp is None:
            self.s3_error(403, "InvalidToken", "the session token was not handed out")
            return False
        if time.time() >= exp:
            self.s3_error(400, "ExpiredToken", "The provided token has expired.")
            return False
        bump("s3_with_token")
        return True

    def s3(self):
        raw = self.body()
        bump("s3")
        if not self.s3_check():
            return
        host, port = A.target.rsplit(":", 1)
        c = http.client.HTTPConnection(host, int(port), timeout=60)
        c.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for k, v in self.headers.items():
            if k.lower() not in ("connection", "expect", "keep-alive"):
                c.putheader(k, v)
        c.endheaders(raw if raw else None)
        r = c.getresponse()
        data = r.read()
        c.close()
        if A.delay_ms and self.command == "PUT":
            time.sleep(A.delay_ms / 1000)
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "keep-alive", "content-length"):
                self.send_header(k, v)
        n = r.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", n if n is not None else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    # ---- routing ----
    def route(self):
        u = urllib.parse.urlsplit(self.path)
        p = u.path
        try:
            if self.command == "POST" and p == "/":
                return self.sts(self.body())
            if self.command == "PUT" and p == "/latest/api/token":
                self.body()
                return self.imds_token()
            if self.command == "GET" and p.startswith("/latest/meta-data/"):
                return self.imds_get(p)
            if self.command == "GET" and p == "/v1/credentials":
                bump("pod")
                if not A.pod_token or self.headers.get("Authorization") != A.pod_token:
                    return self.answer(401, json.dumps({"code": "AccessDeniedException",
                                                        "message": "invalid authorization token"}))
                return self.answer(200, self.aws_json())
            m = re.fullmatch(r"/([^/]+)/oauth2/v2\.0/token", p)
            if self.command == "POST" and m:
                return self.entra(m.group(1), self.body())
            if self.command == "GET" and p == "/metadata/identity/oauth2/token":
                return self.msi(u.query)
            return self.s3()
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = route


def main():
    global A
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="127.0.0.1:7480")
    ap.add_argument("--access-key", required=True)
    ap.add_argument("--secret-key", required=True)
    ap.add_argument("--lifetime", type=int, default=3600)
    ap.add_argument("--jwt-file")
    ap.add_argument("--refuse-role", action="append")
    ap.add_argument("--pod-token")
    ap.add_argument("--imds-role", default="podvault-node")
    ap.add_argument("--tenant", default="tenant-1")
    ap.add_argument("--client-id", default="client-1")
    ap.add_argument("--client-secret", default="secret-1")
    ap.add_argument("--assertion-file")
    ap.add_argument("--require-token", action="store_true")
    ap.add_argument("--bucket-region")
    ap.add_argument("--delay-ms", type=int, default=0)
    ap.add_argument("--stats")
    ap.add_argument("--jwt", action="store_true",
                    help="Entra ID and managed identity tokens are unsigned JWTs with the claims "
                         "Azurite's --oauth basic checks (aud, iss, nbf, exp)")
    ap.add_argument("--max-seconds", type=int, default=900, help="exit after this long")
    A = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    t = threading.Timer(A.max_seconds, srv.shutdown)
    t.daemon = True
    t.start()
    print(f"listening 127.0.0.1:{srv.server_address[1]}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
