#include "http.h"

#include <utility>

namespace ratelimit::server {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

const std::string* Request::header(std::string_view name) const {
  for (const Header& h : headers) {
    if (iequals(h.name, name)) return &h.value;
  }
  return nullptr;
}

void Response::set_header(std::string name, std::string value) {
  for (Header& h : headers) {
    if (iequals(h.name, name)) {
      h.value = std::move(value);
      return;
    }
  }
  headers.push_back({std::move(name), std::move(value)});
}

std::string Response::header(std::string_view name) const {
  for (const Header& h : headers) {
    if (iequals(h.name, name)) return h.value;
  }
  return "";
}

std::string_view reason_phrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 417:
      return "Expectation Failed";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

Exchange::Exchange(std::function<void(Response)> deliver) : deliver_(std::move(deliver)) {}

void Exchange::respond(Response response) {
  std::function<void(Response)> deliver;
  std::function<void(const Response&)> observer;
  {
    std::lock_guard lock(mu_);
    if (answered_) return;
    answered_ = true;
    deliver = std::move(deliver_);
    observer = std::move(observer_);
    on_gone_ = nullptr;
    if (gone_) deliver = nullptr;  // nobody to send it to
  }
  if (observer) observer(response);
  if (deliver) deliver(std::move(response));
}

bool Exchange::answered() const {
  std::lock_guard lock(mu_);
  return answered_;
}

void Exchange::observe(std::function<void(const Response&)> observer) {
  std::lock_guard lock(mu_);
  observer_ = std::move(observer);
}

void Exchange::client_gone() {
  std::function<void()> f;
  {
    std::lock_guard lock(mu_);
    if (gone_) return;
    gone_ = true;
    f = std::move(on_gone_);
  }
  if (f) f();
}

bool Exchange::gone() const {
  std::lock_guard lock(mu_);
  return gone_;
}

void Exchange::on_gone(std::function<void()> f) {
  {
    std::lock_guard lock(mu_);
    if (answered_) return;
    if (!gone_) {
      on_gone_ = std::move(f);
      return;
    }
  }
  f();
}

}  // namespace ratelimit::server
