"""A Content-Security-Policy on every HTML page the site serves.

Pages load scripts and styles only from the site itself (htmx and Chart.js
are served from /static): no inline script, style or event handler runs, so
markup that slipped into a page cannot act as the platform. A response that
set its own policy keeps it (the IPFS gateway sandboxes what it serves).
"""

from django.conf import settings


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if "Content-Security-Policy" in response or not response.get("Content-Type", "").startswith("text/html"):
            return response
        policy = settings.CONTENT_SECURITY_POLICY
        for prefix, override in settings.CONTENT_SECURITY_POLICY_OVERRIDES.items():
            if request.path.startswith(prefix):
                policy = override
                break
        response["Content-Security-Policy"] = policy
        return response
