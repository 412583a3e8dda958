"""HAProxy and nginx as plain keep-alive reverse proxies doing the router's work
(strip the prefix, add X-Forwarded-*), in front of the direct instance."""

from .api import wait_http
from .procs import free_port


def haproxy_cfg(port, upstream_port):
    return f"""# Plain keep-alive reverse proxy with prefix stripping (Skiff benchmark).
global
    maxconn 4096
    nbthread 2
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    option forwardfor
    http-reuse always
frontend bench
    bind 127.0.0.1:{port}
    default_backend fn
backend fn
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request replace-path /fn/alice/hello/?(.*) /\\1
    server direct 127.0.0.1:{upstream_port}
"""


def nginx_conf(d, port, upstream_port):
    return f"""# Plain keep-alive reverse proxy with prefix stripping (Skiff benchmark).
daemon off;
user root;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream fn {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location /fn/alice/hello {{
            rewrite ^/fn/alice/hello/?(.*)$ /$1 break;
            proxy_pass http://fn;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_buffering off;
        }}
    }}
}}
"""


def start_haproxy(run, upstream_port):
    """HAProxy in front of the direct instance; returns its port."""
    port = free_port()
    cfg = run.work / "haproxy.cfg"
    cfg.write_text(haproxy_cfg(port, upstream_port))
    run.results["raw"]["haproxy_cfg"] = cfg.read_text()
    p = run.procs.start("haproxy", ["haproxy", "-db", "-f", str(cfg)])
    wait_http(f"http://127.0.0.1:{port}/fn/alice/hello", timeout=30, proc=p)
    return port


def start_nginx(run, upstream_port):
    """nginx in front of the direct instance; returns its port."""
    port = free_port()
    d = run.work / "nginx"
    d.mkdir()
    cfg = d / "nginx.conf"
    cfg.write_text(nginx_conf(d, port, upstream_port))
    run.results["raw"]["nginx_conf"] = cfg.read_text()
    p = run.procs.start("nginx", ["nginx", "-c", str(cfg), "-p", str(d)])
    wait_http(f"http://127.0.0.1:{port}/fn/alice/hello", timeout=30, proc=p)
    return port
