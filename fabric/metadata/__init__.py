"""The metadata service: what a guest learns about itself at http://169.254.169.254.

A guest asks over its own tenant network; the server that answers runs inside
the network worker of the host carrying that network (in the host's network
namespace) and listens on each network's device, so it knows which network a
request came in on. It finds the instance from that network and the request's
source address, in the database (:mod:`fabric.metadata.facts`), never from
anything the guest can put in a request. It answers in OpenStack's format
(:mod:`fabric.metadata.openstack`) and EC2's (:mod:`fabric.metadata.ec2`);
:mod:`fabric.metadata.app` routes a request to them and
:mod:`fabric.metadata.server` holds the listening sockets.
"""

#: The address every cloud serves its metadata on.
METADATA_ADDRESS = "169.254.169.254"
METADATA_PORT = 80
