"""Provider host patterns as X.509 Name Constraints, and the RFC 5280 rules that match them.

The CA permits only the configured provider domains (DNS names) and excludes every IP address.
Clients that trust it then cannot be fooled by a stolen CA key into accepting a certificate for
any other site: OpenSSL, Go, browsers, ... enforce the constraints of a trust anchor. The
matching here is RFC 5280 4.2.1.10 as OpenSSL applies it, so what `lmk check` and the proxy's
CA watch report (`llamakey.ca.checks`) is what clients will do.

Nothing here reads or writes files: certificates come in, names and answers go out.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from cryptography import x509

from llamakey.ca.errors import CAError

__all__ = ["constrains_dns_names", "hosts_not_permitted", "permitted_names"]

# One DNS label: letters, digits, hyphen; underscore too, since some service names use it.
_LABEL_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


def _normalize_host(host: str) -> str:
    """Lower-case, strip a trailing dot and validate one host pattern ("*." only leftmost).

    Raises CAError for anything that cannot become a DNS name constraint: IP addresses (the CA
    excludes all IPs), ports, bare "*", wildcards inside a label, non-ASCII (use the xn-- form).
    """
    name = host.strip().lower().removesuffix(".")
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        pass
    else:
        raise CAError(f"{host!r}: IP addresses cannot be provider hosts (the CA excludes all IPs)")
    if not name.isascii():
        raise CAError(f"{host!r}: use the ASCII (xn--) form of internationalised names")
    base = name.removeprefix("*.")
    labels = base.split(".")
    if len(base) > 253 or not all(_LABEL_RE.match(label) for label in labels):
        raise CAError(f"{host!r} is not a host name or a '*.domain' pattern")
    if name.startswith("*.") and len(labels) < 2:
        # "*.com" would let the CA sign for a whole top-level domain.
        raise CAError(f"{host!r}: a wildcard needs at least two labels after '*.'")
    return name


def permitted_names(hosts: Iterable[str]) -> list[str]:
    """Host patterns -> DNS name constraints.

    "api.openai.com" stays (RFC 5280: permits it and its subdomains); "*.openai.azure.com"
    becomes ".openai.azure.com" (subdomains only, the bare domain is not needed). The result is
    sorted and deduplicated. Raises CAError for a pattern that cannot be constrained.
    """
    names = set()
    for host in hosts:
        name = _normalize_host(host)
        names.add("." + name.removeprefix("*.") if name.startswith("*.") else name)
    return sorted(names)


def _dns_constraint_matches(constraint: str, name: str) -> bool:
    """True when DNS name constraint ``constraint`` covers ``name`` (RFC 5280 4.2.1.10, OpenSSL).

    "example.com" matches example.com and every subdomain; ".example.com" only subdomains;
    "" matches everything. Comparison is case-insensitive and label-aligned.
    """
    constraint = constraint.lower().removesuffix(".")
    name = name.lower().removesuffix(".")
    if not constraint:
        return True
    if constraint.startswith("."):
        return name.endswith(constraint)
    return name == constraint or name.endswith("." + constraint)


def _dns_constraint_covers_subdomains(constraint: str, base: str) -> bool:
    """True when ``constraint`` matches every name "<label>.<base>" (the host "*.<base>")."""
    constraint = constraint.lower().removesuffix(".")
    base = base.lower()
    if not constraint:
        return True
    # "<label>.<base>" ends with ".<base>", so it ends with ".c" exactly when base is c or under c.
    suffix = constraint.removeprefix(".")
    return base == suffix or base.endswith("." + suffix)


def _dns_constraint_overlaps_subdomains(constraint: str, base: str) -> bool:
    """True when ``constraint`` matches at least one name "<label>.<base>" (for exclusions)."""
    suffix = constraint.lower().removesuffix(".").removeprefix(".")
    return _dns_constraint_covers_subdomains(constraint, base) or suffix.endswith("." + base)


def _dns_subtrees(subtrees: Iterable[x509.GeneralName] | None) -> list[str] | None:
    """The DNS entries of a permitted/excluded list; None when the list constrains no DNS names."""
    if subtrees is None:
        return None
    dns = [s.value for s in subtrees if isinstance(s, x509.DNSName)]
    return dns or None


def _host_permitted(host: str, constraints: x509.NameConstraints) -> bool:
    """Whether every name matching host pattern ``host`` satisfies ``constraints`` (DNS part)."""
    permitted = _dns_subtrees(constraints.permitted_subtrees)
    excluded = _dns_subtrees(constraints.excluded_subtrees) or []
    if host.startswith("*."):
        base = host[2:]
        allowed = permitted is None or any(
            _dns_constraint_covers_subdomains(c, base) for c in permitted
        )
        return allowed and not any(_dns_constraint_overlaps_subdomains(c, base) for c in excluded)
    allowed = permitted is None or any(_dns_constraint_matches(c, host) for c in permitted)
    return allowed and not any(_dns_constraint_matches(c, host) for c in excluded)


def _name_constraints(cert: x509.Certificate) -> x509.NameConstraints | None:
    """The certificate's NameConstraints extension, or None when it has none."""
    try:
        return cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None


def constrains_dns_names(cert: x509.Certificate) -> bool:
    """True when `cert` restricts DNS names (False e.g. for mitmproxy's own CA)."""
    constraints = _name_constraints(cert)
    return constraints is not None and _dns_subtrees(constraints.permitted_subtrees) is not None


def hosts_not_permitted(cert: x509.Certificate, hosts: Iterable[str]) -> list[str]:
    """Host patterns that the name constraints of CA certificate `cert` do not permit.

    A constraint "example.com" permits example.com and any subdomain, ".example.com" only
    subdomains; a "*.domain" host needs every subdomain permitted. Hosts are reported as given,
    in order, without duplicates; [] when all fit (also for a CA without DNS constraints, which
    permits everything). Raises CAError when a host pattern is invalid.
    """
    constraints = _name_constraints(cert)
    missing: list[str] = []
    for host in hosts:
        name = _normalize_host(host)
        covered = constraints is None or _host_permitted(name, constraints)
        if not covered and host not in missing:
            missing.append(host)
    return missing
