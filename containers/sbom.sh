#!/bin/sh
# A CycloneDX SBOM of the image's Python environment (/opt/venv), written to
# /usr/share/sbom/python-environment.cdx.json at build time. The tool runs from
# a virtual environment of its own, removed afterwards: it is neither in the
# image nor in its SBOM. Pins: /tmp/constraints-dev.txt.
set -eux
python3 -m venv /tmp/sbom-tool
PIP_CERT=/tmp/host-ca.crt /tmp/sbom-tool/bin/pip install -c /tmp/constraints-dev.txt cyclonedx-bom
mkdir -p /usr/share/sbom
/tmp/sbom-tool/bin/cyclonedx-py environment --of JSON --output-reproducible \
  -o /usr/share/sbom/python-environment.cdx.json /opt/venv/bin/python
rm -rf /tmp/sbom-tool /tmp/constraints-dev.txt /tmp/host-ca.crt /tmp/sbom.sh /root/.cache
