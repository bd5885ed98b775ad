from django.urls import path

from registry.views import IpfsGatewayView

urlpatterns = [
    path("ipfs/<str:cid>", IpfsGatewayView.as_view(), name="ipfs-gateway"),
    path("ipfs/<str:cid>/<path:subpath>", IpfsGatewayView.as_view(), name="ipfs-gateway-path"),
]
