//! The real Orders and the real Payments, linked by the real WebSocket: an order is
//! paid or cancelled through the payment page, cancelled through the Orders API, and
//! survives either service restarting at the worst moment. Nothing lost, one invoice.

use e2e::Stack;
use serde_json::Value;

#[tokio::test]
async fn an_order_paid_on_the_page_is_fulfilled_with_an_invoice() {
    let stack = Stack::spawn().await;
    let order = stack.create_order(1999, "EUR").await;
    let url = stack.payment_url(order).await;
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{}/pay/", stack.payments_port)),
        "{url}"
    );

    let page = stack
        .http
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("€19.99"), "the page shows the amount");

    stack.press(&url, "complete").await;
    let fulfilled = stack.wait_status(order, "fulfilled").await;
    assert_eq!(fulfilled["payment_method"], "credit_card");
    let invoice: Value = stack
        .http
        .get(stack.orders_url(&format!("/orders/{order}/invoice")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(invoice["number"], "INV-000001");
    assert_eq!(invoice["amount"], 1999);
    assert_eq!(stack.invoices().await, 1);
}

#[tokio::test]
async fn an_order_cancelled_on_the_page_is_cancelled_by_the_customer() {
    let stack = Stack::spawn().await;
    let order = stack.create_order(500, "USD").await;
    let url = stack.payment_url(order).await;
    stack.press(&url, "cancel").await;
    let cancelled = stack.wait_status(order, "cancelled").await;
    assert_eq!(cancelled["cancel_reason"], "customer");
    assert_eq!(stack.invoices().await, 0);
}

#[tokio::test]
async fn cancelling_through_the_orders_api_cancels_the_payment() {
    let stack = Stack::spawn().await;
    let order = stack.create_order(800, "EUR").await;
    let url = stack.payment_url(order).await;
    let response = stack
        .http
        .post(stack.orders_url(&format!("/orders/{order}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let cancelled = stack.wait_status(order, "cancelled").await;
    assert_eq!(cancelled["cancel_reason"], "orders_cancelled");
    // The page shows it, and paying now changes nothing.
    stack.press(&url, "complete").await;
    let page = stack
        .http
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("The shop cancelled this payment"), "{page}");
    assert_eq!(stack.order(order).await["status"], "cancelled");
}

#[tokio::test]
async fn payments_restarted_mid_flow_loses_nothing() {
    let mut stack = Stack::spawn().await;
    let order = stack.create_order(1200, "EUR").await;
    let url = stack.payment_url(order).await;

    stack.stop_payments().await;
    let waiting = stack.create_order(300, "EUR").await; // created while Payments is down
    stack.start_payments().await;

    // The same page works after the restart, and the order made during the outage
    // gets its page once the link is back.
    stack.press(&url, "complete").await;
    stack.wait_status(order, "fulfilled").await;
    let second = stack.payment_url(waiting).await;
    stack.press(&second, "complete").await;
    stack.wait_status(waiting, "fulfilled").await;
    assert_eq!(stack.invoices().await, 2);
}

#[tokio::test]
async fn a_payment_made_while_orders_is_down_is_applied_when_it_returns() {
    let mut stack = Stack::spawn().await;
    let order = stack.create_order(4200, "EUR").await;
    let url = stack.payment_url(order).await;

    stack.stop_orders().await;
    stack.press(&url, "complete").await; // the customer pays while Orders is down
    stack.start_orders().await;

    stack.wait_status(order, "fulfilled").await;
    assert_eq!(stack.invoices().await, 1, "exactly one invoice");
}
