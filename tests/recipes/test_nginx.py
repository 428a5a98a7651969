"""The nginx recipe, pure: inputs, the rendered configuration (checked by the real `nginx -t`), the steps and
their Pulumi form."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from polyvm.errors import SpecError
from polyvm.host import Facts, Host
from polyvm.recipes.nginx import NginxRecipe
from polyvm.recipes.nginx.recipe import render_site

HOST = Host(address="198.51.100.7", user="admin", name="web1")
FACTS = Facts("debian", "12")


def parse(**data):
    return NginxRecipe().parse_inputs(data)


def test_inputs_are_validated_with_every_problem_at_once():
    with pytest.raises(SpecError) as ei:
        parse(upstreams=["nope", "10.0.0.5:99999"], server_names=["bad name"], root="relative", https_port=0)
    text = str(ei.value)
    for field in ("nginx.upstreams", "nginx.server_names", "nginx.root", "nginx.https_port"):
        assert field in text
    with pytest.raises(SpecError, match="must differ"):
        parse(http_port=8443, https_port=8443)
    with pytest.raises(SpecError, match="unknown field|extra"):
        parse(colour="red")


def test_static_and_proxy_sites_and_ports():
    static = render_site(parse(), HOST)
    assert "root /var/www/polyvm;" in static and "proxy_pass" not in static and "server_name 198.51.100.7;" in static
    assert "return 301 https://$host$request_uri;" in static
    proxy = render_site(parse(upstreams=["10.0.0.5:8080", "[2001:db8::5]:8080"], http_port=None), HOST)
    assert "server 10.0.0.5:8080;" in proxy and "server [2001:db8::5]:8080;" in proxy and "root " not in proxy
    assert "listen 80" not in proxy
    assert NginxRecipe().ports(parse()) == [80, 443] and NginxRecipe().ports(parse(http_port=None)) == [443]
    assert NginxRecipe().outputs(parse(https_port=8443), HOST)["url"] == "https://198.51.100.7:8443/"


def test_steps_have_no_firewall_or_disk_and_a_static_site_gets_its_page():
    steps = NginxRecipe().steps(parse(), HOST, FACTS)
    assert [s.name for s in steps] == ["install nginx", "certificate", "site", "nginx"]
    site = steps[2]
    assert [f.remote_path for f in site.files] == ["/etc/nginx/conf.d/polyvm.conf", "/var/www/polyvm/index.html"]
    assert "polyvm nginx on web1" in site.files[1].content
    proxy = NginxRecipe().steps(parse(upstreams=["10.0.0.5:8080"]), HOST, FACTS)
    assert [f.remote_path for f in proxy[2].files] == ["/etc/nginx/conf.d/polyvm.conf"]
    for s in steps:
        if hasattr(s, "content"):
            r = subprocess.run([shutil.which("dash") or "sh", "-n"], input=s.content, capture_output=True)
            assert r.returncode == 0, (s.name, r.stderr)


@pytest.mark.skipif(shutil.which("nginx") is None or shutil.which("openssl") is None,
                    reason="nginx and openssl are needed (scripts/setup installs them)")
@pytest.mark.parametrize("inputs", [{}, {"upstreams": ["127.0.0.1:8080"], "server_names": ["web.example.test"]},
                                    {"https_port": 8443, "http_port": None}])
def test_rendered_configuration_passes_nginx_t(tmp_path, inputs):
    """The real nginx parser accepts what the recipe writes (with the certificate paths moved to tmp)."""
    crt, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=t", "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True)
    site = render_site(parse(**inputs), HOST).replace("/etc/polyvm/nginx/server.crt", str(crt)) \
        .replace("/etc/polyvm/nginx/server.key", str(key))
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{ access_log off; client_body_temp_path {tmp_path}; include {tmp_path}/site.conf; }}\n")
    r = subprocess.run(["nginx", "-t", "-q", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_pulumi_form_through_the_generic_recipe_resource():
    pytest.importorskip("pulumi")
    from polyvm.plan import run_mocked
    from polyvm.plugins import get_backend
    from polyvm.provisioners.pulumi import RecipeResource
    from polyvm.spec import parse_spec

    backend = get_backend("gcp")
    spec = parse_spec({"name": "web1", "size": "small", "image": {"family": "ubuntu", "version": "24.04"},
                       "ingress": [{"port": 22, "cidrs": ["203.0.113.0/24"]},
                                   {"port": 80, "cidrs": ["0.0.0.0/0"]}, {"port": 443, "cidrs": ["0.0.0.0/0"]}],
                       "ssh": {"public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVvz5mTVd3MZkX1mB4pSHb5GmV9SfMWgCEP1bwcUVqT x"}})

    def program():
        vm = backend.declare(spec, {"project": "polyvm-demo", "region": "europe-west1", "zone": "europe-west1-b"})
        return RecipeResource("web1-nginx", vm=vm, recipe="nginx", inputs={}, private_key="k").outputs

    _v, mocks, _ = run_mocked(program, [backend])
    by_name = {n: i for _t, n, i, _c, _id in mocks.resources}
    names = [n for n in by_name if n.startswith("web1-nginx-")]
    assert names == ["web1-nginx-00-install-nginx", "web1-nginx-01-certificate", "web1-nginx-02-site-polyvm-conf",
                     "web1-nginx-02-site-index-html", "web1-nginx-03-nginx"]
    # gcp filters in the cloud (its firewall has 80/443 from the spec): no guest baseline here.
    assert not any("firewall" in n for n in names)
    # The VM's address is known only once it exists: the site and the certificate get the real one.
    site = by_name["web1-nginx-02-site-polyvm-conf"]["content"]
    assert "pending" not in str(site) and "server_name" in str(site)
    assert "pending" not in str(by_name["web1-nginx-01-certificate"]["stdin"])
