//! Alice's receipts: the resolutions the TP recorded for her, a page at a
//! time.

use tracing::info;
use vtp_protocol::wire::{FetchRequest, Response};

use super::{journal_refusal, protocol_refusal, short, Service};

impl Service {
    /// One page of the sender's receipts: those after the request's
    /// `after_seq`, as many as fit one
    /// [`vtp_protocol::wire::RECEIPTS_PAGE_MAX_FRAME`]
    /// response (the client asks again for the rest).
    pub(super) async fn fetch_receipts(&self, req: FetchRequest) -> Response {
        let sender = match req.verify(self.live().tp.card(), self.clock.now()) {
            Ok(id) => id,
            Err(e) => {
                info!(error = %e, "receipt request refused");
                return protocol_refusal(&e);
            }
        };
        let after_seq = req.body.after_seq;
        let page = vtp_protocol::wire::PageBuilder::new(
            vtp_protocol::wire::RECEIPTS_PAGE_MAX_FRAME,
            req.body.max_receipts,
        );
        match self
            .journal
            .blocking(move |j| j.receipts_for_sender(&sender, after_seq, page))
            .await
        {
            Ok(page) => {
                info!(
                    sender = %short(&sender.0),
                    after_seq,
                    count = page.receipts.len(),
                    more = page.more,
                    "receipts fetched"
                );
                Response::Receipts(page)
            }
            Err(e) => journal_refusal(&sender.0, &e),
        }
    }
}
