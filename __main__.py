"""Reads this stack's config, runs the preflight, and declares the serverless ASM gateway stack."""

import os

import pulumi

import preflight
import stack_config
from components.stack import ServerlessGateway

# The engine's backend token is the engine's: nothing this program starts (a kubeconfig's `exec`
# credential plugin, for one) needs it.
os.environ.pop("PULUMI_ACCESS_TOKEN", None)
config = stack_config.load()
observed = preflight.require(config)  # refuses before anything is declared; what it read of each cluster
options = stack_config.provider_options(config, "asm-gateway")
stack = ServerlessGateway("asm-gateway", config.gateway, options, observed)

pulumi.export("nodePoolId", stack.node_pool_id)
pulumi.export("nodeNames", stack.node_names)
if config.gateway.clusters[0].ecs.node_pool_id is not None:  # what the adopted pool had of its own
    pulumi.export("poolMarksBefore", stack.pool_marks_before)
pulumi.export("virtualNodeMode", stack.virtual_node_mode)
pulumi.export("meshId", stack.mesh_id)
pulumi.export("gateways", stack.gateways)
pulumi.export("placementForecast", stack.placement_forecast)
if stack.clusters is not None:  # a stack of several clusters: each one's pool and nodes
    pulumi.export("clusters", stack.clusters)
