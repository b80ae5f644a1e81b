// Command catalogue serves read-only product data over HTTP (the Socks-Shop catalogue).
//
// Twelve-factor: configured only from its environment (PORT, CATALOGUE_DATA, BIND), logs one
// line per request to stdout, holds no state (the data file is read once at start), and
// stops cleanly on SIGTERM, finishing requests in flight. Standard library only.
//
//	GET /health            {"status":"ok",...}
//	GET /catalogue         every product
//	GET /catalogue/{id}    one product, or 404
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Product is one item for sale.
type Product struct {
	ID    string   `json:"id"`
	Name  string   `json:"name"`
	Price float64  `json:"price"`
	Tags  []string `json:"tags"`
}

type server struct {
	products []Product
	byID     map[string]Product
	instance string
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func load(path string) ([]Product, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var products []Product
	if err := json.Unmarshal(raw, &products); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return products, nil
}

func (s *server) reply(w http.ResponseWriter, status int, body interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w, status: 200}
	s.route(rec, r)
	log.Printf("%s %s %d %.1fms", r.Method, r.URL.Path, rec.status,
		float64(time.Since(start).Microseconds())/1000)
}

func (s *server) route(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		s.reply(w, http.StatusMethodNotAllowed, map[string]string{"error": "read-only: use GET"})
		return
	}
	path := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case path == "/health":
		s.reply(w, 200, map[string]interface{}{"status": "ok", "service": "catalogue",
			"instance": s.instance, "products": len(s.products)})
	case path == "/catalogue":
		s.reply(w, 200, map[string]interface{}{"instance": s.instance, "products": s.products})
	case strings.HasPrefix(path, "/catalogue/"):
		id := strings.TrimPrefix(path, "/catalogue/")
		if p, ok := s.byID[id]; ok {
			s.reply(w, 200, p)
		} else {
			s.reply(w, 404, map[string]string{"error": "no product " + id})
		}
	default:
		s.reply(w, 404, map[string]string{"error": "no route " + r.URL.Path})
	}
}

type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

func main() {
	log.SetFlags(0)
	log.SetOutput(os.Stdout)
	products, err := load(env("CATALOGUE_DATA", "/etc/catalogue/products.json"))
	if err != nil {
		log.Fatalf("catalogue: cannot load products: %v", err)
	}
	s := &server{products: products, byID: map[string]Product{}}
	for _, p := range products {
		s.byID[p.ID] = p
	}
	s.instance, _ = os.Hostname()
	addr := env("BIND", "0.0.0.0") + ":" + env("PORT", "8080")
	srv := &http.Server{Addr: addr, Handler: s, ReadHeaderTimeout: 5 * time.Second}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	log.Printf("catalogue: %d products, listening on %s", len(products), addr)
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Fatalf("catalogue: %v", err)
	}
	log.Printf("catalogue: stopped")
}
