"""A stand-in for the Hugging Face Hub on loopback, serving local folders as model repos.

Answers what the Hub answers to downloaders: /api/models/{repo}/revision/{rev},
/api/models/{repo}/tree/{rev}, /{repo}/resolve/{rev}/{file} with Range, ETag and
X-Repo-Commit, and a redirect to a second port for large files (.safetensors, .gguf).
Used by scripts/check_hub.sh; the Rust tests have their own (crates/lamina-loader/tests).

    python scripts/fake_hub.py PORT org/name=FOLDER [org/name=FOLDER ...]
"""
import hashlib
import http.server
import json
import os
import sys
import threading

PORT = int(sys.argv[1])
REPOS = {}
for spec in sys.argv[2:]:
    repo, folder = spec.split("=", 1)
    files = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            data = open(path, "rb").read()
            files[name] = (data, hashlib.sha256(data).hexdigest())
    commit = hashlib.sha1(repo.encode()).hexdigest()
    REPOS[repo] = (commit, files)
BLOBS = {sha: data for _, files in REPOS.values() for data, sha in files.values()}


def is_lfs(name):
    return name.endswith((".safetensors", ".gguf"))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, status, value, headers=()):
        body = json.dumps(value).encode()
        self.send_response(status)
        for key, val in headers:
            self.send_header(key, val)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_bytes(self, data, headers):
        start, end = 0, len(data) - 1
        status = 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, b = rng[6:].split("-", 1)
            start, end = int(a), min(int(b) if b else len(data) - 1, len(data) - 1)
            status = 206
        self.send_response(status)
        for key, val in headers:
            self.send_header(key, val)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data[start : end + 1])

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path.startswith("/cdn/"):
            return self.send_bytes(BLOBS[path[5:]], [])
        parts = path.strip("/").split("/")
        api = parts[:2] == ["api", "models"]
        parts = parts[2:] if api else parts
        repo = "/".join(parts[:2])
        if repo not in REPOS or len(parts) < 4:
            return self.send_json(404, {"error": "Repository not found"}, [("X-Error-Code", "RepoNotFound")])
        commit, files = REPOS[repo]
        kind, rev, rest = parts[2], parts[3].replace("%2F", "/"), "/".join(parts[4:])
        if rev not in ("main", commit):
            return self.send_json(404, {"error": "Invalid rev id"}, [("X-Error-Code", "RevisionNotFound")])
        if api and kind == "revision":
            siblings = [{"rfilename": n} for n in files]
            return self.send_json(200, {"id": repo, "sha": commit, "siblings": siblings})
        if api and kind == "tree":
            tree = []
            for name, (data, sha) in files.items():
                entry = {"type": "file", "oid": sha[:40], "size": len(data), "path": name}
                if is_lfs(name):
                    entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 134}
                tree.append(entry)
            return self.send_json(200, tree)
        if not api and kind == "resolve" and rest in files:
            data, sha = files[rest]
            if is_lfs(rest):
                self.send_response(302)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("X-Linked-Etag", f'"{sha}"')
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("ETag", f'"{sha[:40]}"')
                self.send_header("Location", f"http://127.0.0.1:{PORT + 1}/cdn/{sha}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            return self.send_bytes(data, [("X-Repo-Commit", commit), ("ETag", f'"{sha[:40]}"')])
        return self.send_json(404, {"error": "Entry not found"}, [("X-Error-Code", "EntryNotFound")])


servers = [http.server.ThreadingHTTPServer(("127.0.0.1", p), Handler) for p in (PORT, PORT + 1)]
threading.Thread(target=servers[1].serve_forever, daemon=True).start()
print(f"serving {', '.join(REPOS)} on http://127.0.0.1:{PORT}", flush=True)
servers[0].serve_forever()
