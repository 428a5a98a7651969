"""The nginx recipe against real SSH test hosts, checked by real HTTPS requests from this machine that
verify the generated certificate (read from the host over SSH)."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request

import pytest

from polyvm.host import Host
from polyvm.provisioners.fanout import run_recipe
from polyvm.recipes.nginx import NginxRecipe
from polyvm.recipes.nginx.recipe import CRT, https_get

pytestmark = pytest.mark.e2e


def vm_of(host) -> Host:
    return Host(address=host.address, user=host.user, host_key=host.host_key, name="web")


def run(host, **inputs):
    recipe = NginxRecipe()
    result = run_recipe([vm_of(host)], recipe, recipe.parse_inputs(inputs),
                        credentials={"private_key_path": str(host.private_key_path), "deadline": 60}, progress=False)
    (hr,) = result.hosts.values()
    return {r.name: r for r in hr.results}


def master_pid(testhosts, host) -> str:
    return testhosts.exec(host, "cat /run/nginx.pid").stdout.strip()


def test_static_site_over_https_with_a_generated_certificate_and_idempotent_reloads(testhosts):
    (host,) = testhosts.up(user="admin")
    first = run(host, index_html="<h1>hello from polyvm</h1>\n")
    assert all(first[n].changed for n in ("install nginx", "certificate", "site", "nginx"))
    assert "started nginx" in first["nginx"].detail
    cert = testhosts.exec(host, ["cat", CRT]).stdout
    status, body = https_get(f"https://{host.address}/", cadata=cert)  # verifies the chain and the IP SAN
    assert status == 200 and body == "<h1>hello from polyvm</h1>\n"
    # Plain HTTP only redirects to HTTPS.
    opener = urllib.request.build_opener(type("NoRedirect", (urllib.request.HTTPRedirectHandler,),
                                              {"redirect_request": lambda *a, **k: None}))
    with pytest.raises(urllib.error.HTTPError) as ei:
        opener.open(f"http://{host.address}/", timeout=10)
    assert ei.value.code == 301 and ei.value.headers["Location"] == f"https://{host.address}/"
    # The key stays on the host, readable by root only.
    assert testhosts.exec(host, "stat -c '%U %a' /etc/polyvm/nginx/server.key").stdout.split() == ["root", "600"]

    # Unchanged re-run: nothing changes, nginx is not reloaded (same master, same worker processes).
    pid = master_pid(testhosts, host)
    workers = testhosts.exec(host, f"pgrep -P {pid}").stdout.split()
    second = run(host, index_html="<h1>hello from polyvm</h1>\n")
    assert not any(r.changed for r in second.values()), {n: r.detail for n, r in second.items() if r.changed}
    assert testhosts.exec(host, f"pgrep -P {pid}").stdout.split() == workers

    # Changed inputs: the files change and nginx reloads (same master), the new content is served.
    third = run(host, index_html="<h1>changed</h1>\n", client_max_body_size="20m")
    assert third["site"].changed and "reloaded nginx" in third["nginx"].detail
    assert master_pid(testhosts, host) == pid
    assert https_get(f"https://{host.address}/", cadata=cert)[1] == "<h1>changed</h1>\n"
    assert not third["certificate"].changed  # same names: the certificate is kept


def test_reverse_proxy_to_an_upstream(testhosts):
    (host,) = testhosts.up()
    testhosts.exec(host, "mkdir -p /srv/app && echo 'from the upstream' > /srv/app/index.html")
    subprocess.Popen(testhosts.engine.nsenter_argv(host.record) + [
        "python3", "-m", "http.server", "8081", "--bind", "127.0.0.1", "--directory", "/srv/app"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    testhosts.exec(host, "for i in $(seq 100); do ss -ltn | grep -q '127.0.0.1:8081 ' && exit 0; sleep 0.1; done; exit 1")
    steps = run(host, upstreams=["127.0.0.1:8081"], server_names=[host.address, "web.example.test"])
    assert steps["nginx"].changed
    cert = testhosts.exec(host, ["cat", CRT]).stdout
    assert https_get(f"https://{host.address}/", cadata=cert)[1].strip() == "from the upstream"
    san = testhosts.exec(host, ["openssl", "x509", "-in", CRT, "-noout", "-ext", "subjectAltName"]).stdout
    assert f"IP Address:{host.address}" in san and "DNS:web.example.test" in san


def test_bad_configuration_is_refused_and_the_running_site_keeps_serving(testhosts):
    from polyvm.errors import FanoutError

    (host,) = testhosts.up()
    run(host)
    cert = testhosts.exec(host, ["cat", CRT]).stdout
    # An upstream name that does not resolve: nginx -t fails, nothing is reloaded.
    with pytest.raises(FanoutError, match="nginx refuses the configuration"):
        run(host, upstreams=["no-such-host.invalid:8080"])
    assert https_get(f"https://{host.address}/", cadata=cert)[0] == 200


def test_cli_polyvm_nginx_and_apply_recipe(testhosts):
    from click.testing import CliRunner

    from polyvm.cli import build_cli

    (host,) = testhosts.up()
    base = ["-H", f"{host.user}@{host.address}", "-k", str(host.private_key_path), "--host-key", host.host_key,
            "--json"]
    r = CliRunner().invoke(build_cli(), ["nginx", *base, "--set", "index_html=<p>cli</p>"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    (out,) = json.loads(r.output)["hosts"].values()
    assert out["ok"] and out["changed"] and out["outputs"]["url"] == f"https://{host.address}/"
    again = CliRunner().invoke(build_cli(), ["apply", "--recipe", "nginx", *base, "--set", "index_html=<p>cli</p>"],
                               catch_exceptions=False)
    (out2,) = json.loads(again.output)["hosts"].values()
    assert again.exit_code == 0 and out2["ok"] and not out2["changed"]
    cert = testhosts.exec(host, ["cat", CRT]).stdout
    assert https_get(f"https://{host.address}/", cadata=cert)[1] == "<p>cli</p>"
    bad = CliRunner().invoke(build_cli(), ["apply", "--recipe", "nginx", *base, "--set", "https_port=99999"])
    assert bad.exit_code == 2 and "https_port" in bad.output


def test_a_stamped_rerun_repairs_what_changed_on_the_host(testhosts):
    """nginx keeps a run stamp (provisioners/stamp.py): an unchanged re-run is one command; nginx stopped, the
    page removed or the certificate replaced make the next run apply every step again."""
    (host,) = testhosts.up()
    run(host, index_html="<h1>stamped</h1>\n")
    again = run(host, index_html="<h1>stamped</h1>\n")
    assert all("stamp" in r.detail and not r.changed for r in again.values())
    testhosts.exec(host, "kill $(cat /run/nginx.pid); for i in $(seq 600); do [ -s /run/nginx.pid ] || exit 0; "
                         "sleep 0.1; done; echo 'nginx still running 60 s after SIGTERM' >&2; exit 1")
    assert "started nginx" in run(host, index_html="<h1>stamped</h1>\n")["nginx"].detail
    testhosts.exec(host, "rm /var/www/polyvm/index.html")  # the default root
    assert run(host, index_html="<h1>stamped</h1>\n")["site"].changed
    testhosts.exec(host, f"rm {CRT}")
    assert run(host, index_html="<h1>stamped</h1>\n")["certificate"].changed
    cert = testhosts.exec(host, ["cat", CRT]).stdout
    assert https_get(f"https://{host.address}/", cadata=cert)[1] == "<h1>stamped</h1>\n"
    assert all(not r.changed for r in run(host, index_html="<h1>stamped</h1>\n").values())
