// Embeddable player for pages on other sites (a fediverse server's post, say):
//
//   <script src="https://media.example/watch/player/medianode-player.js"></script>
//   <medianode-player cid="bafy..." gateway="https://media.example"></medianode-player>
//
// It frames the gateway's /watch/{cid} page: the Service Worker and the
// peer connections live on the gateway's origin, where they have to be.
// Attributes: cid (required), gateway (default: where this script came from),
// p2p="0" to turn peer connections off, width/height (default 100% x 16:9).

const scriptOrigin = document.currentScript ? new URL(document.currentScript.src).origin : location.origin;

class MedianodePlayer extends HTMLElement {
  static get observedAttributes() {
    return ["cid", "gateway", "p2p"];
  }

  connectedCallback() {
    this.render();
  }

  attributeChangedCallback() {
    if (this.isConnected) this.render();
  }

  render() {
    const cid = this.getAttribute("cid");
    if (!cid) return;
    const gateway = (this.getAttribute("gateway") || scriptOrigin).replace(/\/$/, "");
    const url = new URL(`${gateway}/watch/${encodeURIComponent(cid)}`);
    url.searchParams.set("embed", "1");
    if (this.getAttribute("p2p") === "0") url.searchParams.set("p2p", "0");
    const frame = document.createElement("iframe");
    frame.src = url.href;
    frame.allow = "autoplay; fullscreen; picture-in-picture";
    frame.allowFullscreen = true;
    frame.title = "video";
    frame.style.cssText = `border:0;width:${this.getAttribute("width") || "100%"};` +
      (this.getAttribute("height") ? `height:${this.getAttribute("height")}` : "aspect-ratio:16/9");
    this.replaceChildren(frame);
  }
}

if (!customElements.get("medianode-player")) customElements.define("medianode-player", MedianodePlayer);
