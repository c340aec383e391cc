#!/bin/sh
# A CycloneDX SBOM of the image's Python environment (/opt/venv), written to
# /usr/share/sbom/python-environment.cdx.json. Run in a build stage of its own:
# the tool's virtual environment and the build host's certificates stay there,
# out of the image. Pins: /tmp/constraints-dev.txt.
set -eux
python3 -m venv /tmp/sbom-tool
PIP_CERT=/tmp/host-ca.crt /tmp/sbom-tool/bin/pip install -c /tmp/constraints-dev.txt cyclonedx-bom
mkdir -p /usr/share/sbom
/tmp/sbom-tool/bin/cyclonedx-py environment --of JSON --output-reproducible \
  -o /usr/share/sbom/python-environment.cdx.json /opt/venv/bin/python
